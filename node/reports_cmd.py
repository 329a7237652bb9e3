"""`lienthong reports`: report schedules, completeness and timeliness."""

from __future__ import annotations

import click


@click.group()
def reports() -> None:
    """Periodic reports: who has submitted on time, late, or not at all."""
