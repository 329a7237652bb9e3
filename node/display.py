"""How results are shown to people: times in the display zone, consoles that never cut a line.

Times are stored in UTC and `--json` keeps them as ISO 8601 with their offset (a machine
reads the offset); what a person reads is converted here, once, to the zone set by
`[display] timezone` (Vietnam time, Asia/Ho_Chi_Minh, unless a node says otherwise).
Output that goes to a file, a pipe or a cron mail is never cut to the 80 columns a
terminal library assumes: tables take the width their cells need, as plain columns.
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

VIETNAM = dt.timezone(dt.timedelta(hours=7), "ICT")
DEFAULT_ZONE = "Asia/Ho_Chi_Minh"
# Wide enough for any row a command prints; rich sizes a table to its cells, not to this.
UNCUT_WIDTH = 100_000

_zone: dt.tzinfo = VIETNAM


def zone_named(name: str) -> dt.tzinfo:
    """A zone from `[display] timezone`: an IANA name or an offset such as +07:00."""
    if name == DEFAULT_ZONE:
        # Vietnam has kept UTC+7 since 1975; a fixed offset needs no tz database on the box.
        return VIETNAM
    if name == "UTC":
        return dt.UTC
    if name[:1] in "+-" and len(name) == 6:
        sign = 1 if name[0] == "+" else -1
        return dt.timezone(sign * dt.timedelta(hours=int(name[1:3]), minutes=int(name[4:6])))
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def set_zone(name: str) -> None:
    """Show times in this zone from now on (the node's `[display] timezone`)."""
    global _zone
    _zone = zone_named(name)


def zone_label(moment: dt.datetime | None = None) -> str:
    """'UTC+7' for the display zone (at `moment`, for zones with summer time)."""
    offset = (moment or dt.datetime.now(dt.UTC)).astimezone(_zone).utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{'+' if minutes >= 0 else '-'}{hours}" + (f":{rest:02d}" if rest else "")


def local_time(value: Any, seconds: bool = False) -> str:
    """A stored time (ISO text with an offset, or epoch seconds) as people read it: '2026-12-07 14:05 (UTC+7)'.

    Anything that is not a time (a date alone, '', None, 'never') comes back as it was.
    """
    if value is None or value == "":
        return ""
    try:
        if isinstance(value, int | float):
            moment = dt.datetime.fromtimestamp(value, dt.UTC)
        else:
            text = str(value)
            if "T" not in text and " " not in text.strip():
                return text  # a date, a period: no time of day to convert
            moment = dt.datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)  # stored times without an offset are UTC
    local = moment.astimezone(_zone)
    return f"{local.strftime('%Y-%m-%d %H:%M:%S' if seconds else '%Y-%m-%d %H:%M')} ({zone_label(moment)})"


def is_time_field(name: str) -> bool:
    """Columns holding a moment (`received_at`, `last_contact`, `not_after`…), by the names the store uses."""
    return name.endswith(("_at", "_time")) or name in ("at", "last_contact", "not_after", "not_before", "expires", "created", "used")


def console(stderr: bool = False) -> Console:
    """A rich console: as wide as the terminal on one, never cutting a line anywhere else."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=UNCUT_WIDTH, no_color=True, highlight=False, soft_wrap=True)


def table(*headers: str, **options: Any) -> Table:
    """A rich table: boxed on a terminal; plain columns (no box drawing) in a file, a pipe or a cron mail."""
    if not sys.stdout.isatty():
        options.setdefault("box", None)
    return Table(*headers, **options)
