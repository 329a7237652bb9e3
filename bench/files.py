"""A 200 MB attachment two tiers down, through cut links and a SIGKILLed middle tier (issue #14).

Runs the suite's process test (tests/test_files.py) at bench size: a station's 200 MB report
file crosses the commune to the province over relays slowed to --rate MB/s, cut six times
(three times on each link, one of them with the commune SIGKILLed and restarted mid-file);
records ingested meanwhile must reach the province first, the file must arrive byte for byte,
and the province's peak RSS (VmHWM) must stay under 300 MB. Prints the test's figures.

    .venv/bin/python bench/files.py [--mb 200] [--rate 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, code_under_test, command_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="The attachment's size in MB.")
    parser.add_argument("--rate", type=int, default=20, help="Each relay's speed, MB/s each way.")
    args = parser.parse_args()
    env = {**os.environ, "LIENTHONG_FILE_TEST_MB": str(args.mb), "LIENTHONG_FILE_TEST_RATE_MB": str(args.rate)}
    started = time.monotonic()
    test = "tests/test_files.py::test_a_large_attachment_two_tiers_down_arrives_whole_through_cuts_and_a_killed_middle_tier"
    result = subprocess.run([sys.executable, "-m", "pytest", "-s", "-q", "-p", "no:cacheprovider", test], cwd=REPO, env=env)
    print(
        f"\n{args.mb} MB through 2 tiers at {args.rate} MB/s a link: {'passed' if result.returncode == 0 else 'FAILED'} "
        f"in {time.monotonic() - started:.0f} s (whole test)"
    )
    print(f"command: {command_line()}\ncode: {code_under_test()}")
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
