"""Summarise a `py-spy record --format raw` file: self time and inclusive time per frame.

.venv/bin/python bench/_pyspy_summary.py PROFILE.txt [--top 30] [--filter SUBSTRING]
"""

from __future__ import annotations

import argparse
import collections


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("profile")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--filter", default="", help="only stacks containing this substring")
    args = ap.parse_args()
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    with open(args.profile, errors="replace") as f:
        lines = f.read().splitlines()
    for line in lines:
        if not line:
            continue
        stack, _, n = line.rpartition(" ")
        count = int(n)
        if args.filter and args.filter not in stack:
            continue
        frames = stack.split(";")
        total += count
        threads[frames[0]] += count
        own[frames[-1]] += count
        for f in set(frames[1:]):
            incl[f] += count
    print(f"samples: {total}")
    print("\n-- by thread --")
    for f, c in threads.most_common(10):
        print(f"{100 * c / total:5.1f}%  {f}")
    print("\n-- self --")
    for f, c in own.most_common(args.top):
        print(f"{100 * c / total:5.1f}%  {f}")
    print("\n-- inclusive --")
    for f, c in incl.most_common(args.top):
        print(f"{100 * c / total:5.1f}%  {f}")


if __name__ == "__main__":
    main()
