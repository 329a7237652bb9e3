"""`lienthong feedback`: dispatch citizen feedback and report its processing status."""

from __future__ import annotations

import click


@click.group()
def feedback() -> None:
    """Citizen feedback: assign it to a unit, update its status, list what is overdue."""
