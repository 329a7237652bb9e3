"""`lienthong doctor --dir D`: check a node's setup, one line per problem with its hint; exit 1 on a problem."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .cli_common import DIR_OPTION, echo_json


@click.command()
@DIR_OPTION
@click.option("--timeout", default=3.0, show_default=True, help="Seconds to wait for the parent's answer.")
@click.option("--json", "as_json", is_flag=True, help="Print every check's verdict and each finding as JSON.")
def doctor(node_dir: Path, timeout: float, as_json: bool) -> None:
    """Check the node's setup (configuration, certificates, revocation list, clock, disk, permissions,
    inotify limits, inbox folders, parent): exit 0 when nothing stops it working, 1 when something does.

    Works on a stopped node too: run it before the first `lienthong run`."""
    from .doctor import examine

    report = examine(node_dir, timeout=timeout)
    if as_json:
        echo_json(report.as_dict())
    else:
        for finding in report.findings:
            click.echo(f"{finding.level}: {finding.check}: {finding.message}. Try: {finding.hint}")
        passed = [name for name, verdict in report.checked.items() if verdict == "ok"]
        problems, warnings = len(report.problems), len(report.findings) - len(report.problems)
        click.echo(
            f"{node_dir}: {problems} problem{'s' * (problems != 1)}, {warnings} warning{'s' * (warnings != 1)}; "
            f"passed: {', '.join(passed) or 'none'}"
        )
    if report.problems:
        sys.exit(1)
