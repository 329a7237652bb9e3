"""`lienthong requests`: on-demand data requests from the province and their answers."""

from __future__ import annotations

import click


@click.group()
def requests() -> None:
    """On-demand data requests: see them, approve or decline them."""
