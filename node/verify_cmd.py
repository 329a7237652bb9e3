"""`lienthong verify`: prove, offline, that every stored record is what its origin signed."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lienthong.sync.revocation import Revocations
from lienthong.sync.verify import verify_store

from . import runtime
from .cli_common import DIR_OPTION, audited, echo_json, fail, load_settings, opened_store
from .cli_i18n import _, ngettext

SHOWN = 50


@click.command()
@DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON for scripts.")
def verify(node_dir: Path, as_json: bool) -> None:
    """Re-verify every record's signature, and each origin's chain of seals, offline.

    Exit 0 when everything verifies, 1 when any record fails (each one is named).
    """
    settings = load_settings(node_dir)
    ca_path = runtime.tls_paths(node_dir, settings).ca
    if not ca_path.exists():
        fail(f"{ca_path} is missing: without the province's CA certificate nothing can be verified", "enroll the node, or copy ca.crt")
    with opened_store(node_dir) as store:
        revocations = Revocations(store)
        revocations.refresh()
        report = verify_store(store, ca_path.read_bytes(), revocations.for_certificate)
    if as_json:
        echo_json(report.as_dict())
    else:
        problems = len(report.findings)
        verdict = _("verified") if report.ok else ngettext("{0} problem", "{0} problems", problems).format(problems)
        counted = ", ".join(
            (
                ngettext("{0} record", "{0} records", report.records).format(report.records),
                ngettext("{0} seal", "{0} seals", report.seals).format(report.seals),
                ngettext("{0} origin", "{0} origins", len(report.origins)).format(len(report.origins)),
            )
        )
        click.echo(_("{0}: {1}.").format(counted, verdict))
        for finding in report.findings[:SHOWN]:
            what = f"{finding.kind} {finding.id}" if finding.id else "chain"
            unit = f" (unit {finding.unit})" if finding.unit else ""
            click.echo(f"  {finding.code}: {what}{unit} from {finding.origin}: {finding.reason}", err=True)
        if len(report.findings) > SHOWN:
            click.echo(_("  … and {0} more (use --json for all)").format(len(report.findings) - SHOWN), err=True)
    if not report.ok:
        # A security event: it goes up to the province with the audit log's other entries.
        codes: dict[str, int] = {}
        for finding in report.findings:
            codes[finding.code] = codes.get(finding.code, 0) + 1
        audited(node_dir, "verify.failed", settings.node.id, findings=len(report.findings), codes=codes, records=report.records)
        sys.exit(1)
