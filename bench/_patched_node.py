"""`lienthong` with one connection setting changed, for what-if runs (bench only).

    python bench/_patched_node.py [--cache-mib N] [--pragma 'NAME=VALUE']... run --dir D

Runs the CLI exactly as `lienthong` does, after wrapping `Store._connect` so every
store connection also gets `PRAGMA cache_size = -N*1024` (N MiB instead of SQLite's
2 MiB default) and each `--pragma` given (e.g. `wal_autocheckpoint=16384`). No product
file is changed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lienthong.sync import store as store_module


def main() -> None:
    pragmas: list[str] = []
    while len(sys.argv) >= 3 and sys.argv[1] in ("--cache-mib", "--pragma"):
        flag, value = sys.argv[1], sys.argv[2]
        pragmas.append(f"cache_size = -{int(value) * 1024}" if flag == "--cache-mib" else value)
        del sys.argv[1:3]
    if not pragmas:
        sys.exit(__doc__)
    original = store_module.Store._connect

    def connect(path: Path) -> object:
        conn = original(path)
        for pragma in pragmas:
            conn.execute(f"PRAGMA {pragma}")
        return conn

    store_module.Store._connect = staticmethod(connect)  # type: ignore[method-assign]
    from lienthong.node.cli import main as cli_main

    sys.argv[0] = "lienthong"
    cli_main()


if __name__ == "__main__":
    main()
