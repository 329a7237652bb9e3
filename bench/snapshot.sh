#!/bin/sh
# Freeze the code under test while others edit the working tree.
#
#   PYTHONPATH=$(bench/snapshot.sh [REV]) .venv/bin/python bench/one_stream.py ...
#
# Exports lienthong's packages at REV (default HEAD) into /tmp/lienthong-snap-<sha>/lienthong
# and prints the directory to put on PYTHONPATH. A regular package found through PYTHONPATH
# wins over the editable install, in the bench process and in the `lienthong run` processes it
# starts (they inherit the environment). The benchmarks print which code they ran.
set -eu
cd "$(dirname "$0")/.."
rev=$(git rev-parse "${1:-HEAD}")
dest=/tmp/lienthong-snap-$(echo "$rev" | cut -c1-12)
if [ ! -d "$dest/lienthong" ]; then
    mkdir -p "$dest/lienthong"
    git archive "$rev" sync node config adapters | tar -x -C "$dest/lienthong"
    echo '"""lienthong frozen at '"$rev"' for benchmarks."""' > "$dest/lienthong/__init__.py"
fi
echo "$dest"
