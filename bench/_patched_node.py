"""`lienthong` with one connection setting changed, for what-if runs (bench only).

    python bench/_patched_node.py --cache-mib N run --dir D

Runs the CLI exactly as `lienthong` does, after wrapping `Store._connect` so every
store connection also gets `PRAGMA cache_size = -N*1024` (N MiB instead of SQLite's
2 MiB default). No product file is changed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lienthong.sync import store as store_module


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] != "--cache-mib":
        sys.exit(__doc__)
    mib = int(sys.argv[2])
    del sys.argv[1:3]
    original = store_module.Store._connect

    def connect(path: Path) -> object:
        conn = original(path)
        conn.execute(f"PRAGMA cache_size = -{mib * 1024}")
        return conn

    store_module.Store._connect = staticmethod(connect)  # type: ignore[method-assign]
    from lienthong.node.cli import main as cli_main

    sys.argv[0] = "lienthong"
    cli_main()


if __name__ == "__main__":
    main()
