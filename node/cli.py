"""The `lienthong` command: every operator task, one subcommand each.

This is the one boundary where expected failures become `Error: …` / `Try: …`
on stderr and exit code 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import sqlite3
import sys
from pathlib import Path

import click

from lienthong.sync.errors import LienthongError
from lienthong.sync.privacy import PSEUDONYM_KEY_FILE

from . import cli_i18n, logs, permissions, runtime
from .cli_common import DIR_OPTION, JSON_OPTION, audited, aware_datetime, ca_dir_argument, echo_json, fail, load_settings
from .cli_i18n import _
from .display import local_time
from .trust import ca as ca_ops
from .trust import issue, pseudonyms, tls
from .trust.crl import enforcing_homes, write_crl

# Node certificates are short-lived (30 days); nodes renew their own over the
# replication link after two thirds of that (node/trust/renewal.py).
NODE_CERT_DAYS = issue.DEFAULT_VALIDITY_DAYS


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--version", is_flag=True, is_eager=True, expose_value=False, callback=cli_i18n.version_option, help="Show the version and exit."
)
@click.option(
    "--lang",
    type=click.Choice(cli_i18n.LANGUAGES),
    is_eager=True,
    expose_value=False,
    callback=cli_i18n.lang_option,
    help="Language of messages, help and tables (default: $LIENTHONG_LANG, else the locale: vi_* is Vietnamese).",
)
def cli() -> None:
    """lienthong: a node that shares an IOC unit's reports, feedback and indicators with its parent."""
    # Results go to stdout, logs to stderr, always; `run` configures its own logging from the node's settings.
    logs.configure("warning", "auto", sys.stderr)


# Every command, here or added below by another module, gets its help in the chosen language.
cli.context_class = cli_i18n.LocalisedContext


# ------------------------------------------------------------------ ca


@cli.group()
def ca() -> None:
    """The provincial certificate authority."""


@ca.command("init")
@ca_dir_argument(exists=False)
@click.option("--name", default="lienthong provincial CA", show_default=True, help="The CA's name in certificates.")
@click.option("--protect", is_flag=True, help=f"Encrypt the CA key with a passphrase (from ${ca_ops.PASSPHRASE_ENV}, or asked).")
def ca_init(ca_dir: Path, name: str, protect: bool) -> None:
    """Create a two-level CA in CA_DIR: a root (move its key offline) and the issuing CA it signs."""
    from .trust import root

    passphrase = None
    if protect:
        passphrase = ca_ops.passphrase_from_env() or click.prompt("CA passphrase", hide_input=True, confirmation_prompt=True).encode()
    root.init_two_level(ca_dir, name, passphrase)
    audited(ca_dir, "admin.command", "ca init", name=name, fingerprint=ca_ops.ca_fingerprint(ca_dir), protected=bool(passphrase), levels=2)
    sealed = _("mode 0600, encrypted") if passphrase else _("mode 0600")
    click.echo(_("Created CA {0!r}: root {1} and its key {2} ({3});").format(name, ca_dir / root.ROOT_CERT, ca_dir / root.ROOT_KEY, sealed))
    click.echo(
        _("  issuing CA {0} and its key {1} (a year; signs nodes, renewals, enrollments).").format(
            ca_dir / tls.CA_CERT, ca_dir / tls.CA_KEY
        )
    )
    click.echo(_("Fingerprint of the root (SHA-256): {0}").format(ca_ops.ca_fingerprint(ca_dir)))
    click.echo(
        _("Now move {0} to offline media and delete it here (docs/security.md, Certificate authority).").format(ca_dir / root.ROOT_KEY)
    )
    secret = pseudonyms.for_ca(ca_dir)
    click.echo(
        _("Pseudonym secret {0} (key id {1}, mode 0600): units get it at enrollment.").format(ca_dir / PSEUDONYM_KEY_FILE, secret.key_id)
    )
    click.echo(_("Next: {0}").format(f"lienthong init --dir NODE_DIR --mode provincial --id ID --ca {ca_dir}"))


@ca.command("rotate-pseudonym")
@ca_dir_argument()
def ca_rotate_pseudonym(ca_dir: Path) -> None:
    """Start a new generation of the citizens' pseudonym secret (units take it when they next enroll)."""
    ca_ops.load_ca_cert(ca_dir)
    key = pseudonyms.rotate(ca_dir)
    audited(ca_dir, "admin.command", "ca rotate-pseudonym", key_id=key.key_id)
    click.echo(_("New pseudonym key id {0}: pseudonyms made with it do not match earlier ones (their key id differs).").format(key.key_id))


@ca.command("issue")
@ca_dir_argument()
@click.option(
    "--csr", "csr_file", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path), help="The node's CSR (tls/node.csr)."
)
@click.option("--role", type=click.Choice(issue.ROLES), required=True, help="provincial or district, as the node's --mode.")
@click.option("--parent", default="", help="The node's parent id, recorded with the certificate.")
@click.option("--days", default=NODE_CERT_DAYS, show_default=True, type=click.IntRange(1, 3650), help="Validity in days.")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Where to write the certificate.")
@JSON_OPTION
def ca_issue(ca_dir: Path, csr_file: Path, role: str, parent: str, days: int, out_file: Path, as_json: bool) -> None:
    """Sign a node's certificate request (offline path: CSR file in, certificate file out)."""
    if not out_file.parent.is_dir() or not os.access(out_file.parent, os.W_OK):
        # Checked before issuing: a certificate recorded in the registry must also reach its file.
        fail(
            f"cannot write the certificate to {out_file}: {out_file.parent} is not a folder you can write to",
            "give --out in an existing folder",
        )
    cert = issue.issue_from_csr(ca_dir, csr_file.read_bytes(), role, parent, days, ca_ops.passphrase_from_env())
    out_file.write_bytes(cert)
    secret = None
    if role == "district":
        pseudonyms.install(pseudonyms.for_ca(ca_dir), out_file.parent)
        secret = out_file.parent / PSEUDONYM_KEY_FILE
    from cryptography import x509

    issued = x509.load_pem_x509_certificate(cert)
    serial = format(issued.serial_number, "x")
    audited(ca_dir, "cert.issue", issued.subject.rfc4514_string(), serial=serial, role=role, parent=parent, days=days)
    anchor = ca_dir / ("root.crt" if (ca_dir / "root.crt").exists() else tls.CA_CERT)
    if as_json:
        echo_json(
            {
                "certificate": str(out_file),
                "serial": serial,
                "subject": issued.subject.rfc4514_string(),
                "role": role,
                "parent": parent,
                "not_after": issued.not_valid_after_utc.isoformat(),
                "ca_certificate": str(anchor),
                "pseudonym_secret": str(secret) if secret else None,
            }
        )
        return
    if secret:
        click.echo(_("Wrote {0} (mode 0600): move it to the node's tls/ folder.").format(secret))
    click.echo(_("Wrote {0}. On the node: copy it to tls/node.crt and {1} to tls/ca.crt.").format(out_file, anchor))


@ca.command("list")
@ca_dir_argument()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def ca_list(ca_dir: Path, as_json: bool) -> None:
    """Every certificate this CA issued, with its status (valid, expired, revoked)."""
    import datetime as dt

    now = dt.datetime.now(dt.UTC).isoformat()
    rows = ca_ops.list_issued(ca_dir)
    for row in rows:
        if row["status"] == "valid" and row["not_after"] < now:
            row["status"] = "expired"
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        until = _("until {0}").format(local_time(row["not_after"]))
        click.echo(f"{row['node_id']:<20} {row['role']:<11} {cli_i18n.data_word(row['status']):<12} {until}  serial {row['serial']}")


@ca.command("revoke")
@ca_dir_argument(then="node_or_serial")
@click.argument("node_or_serial", required=False)
@click.option("--reason", default="", help="Why (e.g. key_compromise, superseded, or free text).")
@click.option(
    "--compromised-at",
    default="",
    metavar="TIME",
    help="With --reason key_compromise: since when the key is not to be trusted (e.g. 2026-12-01T08:00:00+07:00).",
)
@JSON_OPTION
def ca_revoke(ca_dir: Path, node_or_serial: str, reason: str, compromised_at: str, as_json: bool) -> None:
    """Revoke a node's certificates (by node id) or one certificate (by serial), and rewrite the CRL."""
    since = _compromise_time(compromised_at, reason) if compromised_at else None
    serials = ca_ops.revoke(ca_dir, node_or_serial, reason, since)
    crl = write_crl(ca_dir, ca_ops.passphrase_from_env())
    audited(ca_dir, "cert.revoke", node_or_serial, serials=serials, reason=reason, compromised_at=compromised_at)
    enforced = bool(enforcing_homes(ca_dir, runtime.running_info))
    if as_json:
        echo_json({"revoked": serials, "subject": node_or_serial, "reason": reason, "crl": str(crl), "enforced": enforced})
    elif serials:
        click.echo(_("Revoked {0}; the revocation list {1} is updated.").format(", ".join(serials), crl))
    else:
        click.echo(_("Nothing to revoke: {0} has no valid certificate. {1} is rewritten.").format(node_or_serial, crl))
    if not enforced:
        click.echo(
            _("Warning: no running node enforces {0}: start the province's node (made with `init --ca {1}`).").format(crl, ca_dir), err=True
        )


def _compromise_time(text: str, reason: str) -> dt.datetime:
    if reason.strip().lower().replace(" ", "_") != "key_compromise":
        fail("--compromised-at states when a key was compromised", "give it with --reason key_compromise")
    return aware_datetime(text, "--compromised-at", "2026-12-01T08:00:00+07:00")


# ------------------------------------------------------------------ run / status


@cli.command()
@DIR_OPTION
def run(node_dir: Path) -> None:
    """Run the node in the foreground; SIGTERM or SIGINT stops it gracefully."""
    settings = load_settings(node_dir)
    logs.configure(settings.log.level, settings.log.format)
    from .web.app import start_for_node  # the console (aiohttp) is loaded by `run` only

    asyncio.run(runtime.Node(node_dir, settings, console=start_for_node).run())


@cli.command()
@DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def status(node_dir: Path, as_json: bool) -> None:
    """Show the node, its parent link and its children (works while stopped too)."""
    from . import status as status_mod

    data = status_mod.collect(node_dir, load_settings(node_dir))
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    from .render import print_status

    print_status(data)


@cli.command()
@DIR_OPTION
@click.option("--timeout", default=3.0, show_default=True, help="Seconds to wait for the node's answer.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict, its reasons and what was measured as JSON.")
def health(node_dir: Path, timeout: float, as_json: bool) -> None:
    """Exit 0 if the node is healthy, 1 with the reasons if not (the Docker health check runs it).

    Healthy: the node runs, its store can be written, its certificate is valid, its server
    answers (when it listens), and its parent takes it and was reached within
    `[health] max_silence` seconds (when it has one)."""
    from .health import assess

    healthy, reasons, details = assess(node_dir, load_settings(node_dir), timeout=timeout)
    if as_json:
        click.echo(json.dumps({"healthy": healthy, "reasons": reasons, **details}, ensure_ascii=False, indent=2))
        if not healthy:
            sys.exit(1)
        return
    if not healthy:
        fail(
            f"the node is unhealthy: {'; '.join(cli_i18n.translate_message(r) for r in reasons)}",
            f"see `lienthong status --dir {node_dir}` and the node's log; `lienthong health --json` shows what was measured",
        )
    click.echo(_("healthy"))
    for warning in details.get("warnings", []):
        click.echo(_("warning: {0}").format(warning))


@cli.command("enroll")
@DIR_OPTION
@click.argument("token_text", metavar="TOKEN")
def enroll_cmd(node_dir: Path, token_text: str) -> None:
    """Join the province with a one-time TOKEN: the key is made here, only a request leaves."""
    from .trust import enroll_client, tokens

    settings = load_settings(node_dir)
    paths = runtime.tls_paths(node_dir, settings)
    province = tokens.parse_token(token_text).province_id
    if settings.parent.id and province and settings.parent.id != province:  # before the token is spent
        fail(f"this token is from {province!r}, but parent.id in lienthong.toml is {settings.parent.id!r}", "correct parent.id")
    hosts = [settings.server.listen.rpartition(":")[0].strip("[]")] if settings.server.listen else []
    parent = enroll_client.enroll(node_dir, token_text, paths.key, paths.cert, paths.ca, hosts=hosts, expect_node_id=settings.node.id)
    audited(node_dir, "enroll", parent, outcome="enrolled")
    if settings.parent.id and settings.parent.id != parent:
        fail(f"enrolled by {parent!r}, but parent.id in lienthong.toml is {settings.parent.id!r}", "correct parent.id")
    click.echo(
        _("Enrolled with {0}: certificate {1}.").format(parent, paths.cert) + " " + _("Next: {0}").format(f"lienthong run --dir {node_dir}")
    )


@cli.group()
def audit() -> None:
    """The node's tamper-evident audit log (security events and admin actions)."""


HEAD_OPTION = click.option(
    "--head",
    "head_text",
    default="",
    metavar="SEQ:HASH",
    help="A head written down earlier (`lienthong audit head`): the log must still contain it.",
)


@audit.command("verify")
@DIR_OPTION
@HEAD_OPTION
@JSON_OPTION
def audit_verify(node_dir: Path, head_text: str, as_json: bool) -> None:
    """Re-check the hash chain: any edit, deletion or reordering is named; exit 1 if the log was altered."""
    from .trust.audit import AuditLog
    from .trust.audit_chain import AuditError, describe, format_head, parse_head

    with AuditLog.open(node_dir) as log_:
        result = log_.verify(parse_head(head_text) if head_text else None)
        if not result.ok:
            # Appended after the damage, so it stays visible, and it goes up to the province
            # (a log too damaged to take it still gets its verdict below).
            with contextlib.suppress(AuditError):
                log_.append("audit.verify_failed", str(result.bad_seq or ""), {"problem": str(result.problem), "reason": result.reason})
    if as_json:
        echo_json(
            {
                "ok": result.ok,
                "checked": result.checked,
                "head": format_head(result.head),
                "bad_seq": result.bad_seq,
                "problem": str(result.problem) if result.problem else None,
                "reason": result.reason,
                "hint": result.hint,
            }
        )
        if not result.ok:
            sys.exit(1)
        return
    if not result.ok:
        fail(describe(result), result.hint)
    click.echo(cli_i18n.translate_message(describe(result)))


@audit.command("head")
@DIR_OPTION
@JSON_OPTION
def audit_head(node_dir: Path, as_json: bool) -> None:
    """Print the log's head (SEQ:HASH): write it down, or give it to an inspector, to detect a rewrite later."""
    from .trust.audit import AuditLog
    from .trust.audit_chain import format_head

    with AuditLog.open(node_dir) as log_:
        head = log_.head()
    if as_json:
        echo_json({"head": format_head(head), "seq": head[0], "hash": head[1]})
        return
    click.echo(format_head(head))


@audit.command("export")
@DIR_OPTION
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True, help="File format.")
@HEAD_OPTION
def audit_export(node_dir: Path, dest: Path, fmt: str, head_text: str) -> None:
    """Export every entry with its hashes for an inspector, ending with the verification result."""
    from .trust.audit import AuditLog
    from .trust.audit_chain import describe, parse_head

    with AuditLog.open(node_dir) as log_:
        result = log_.export(dest, fmt, expected_head=parse_head(head_text) if head_text else None)
    click.echo(_("Wrote {0}.").format(dest) + " " + cli_i18n.translate_message(describe(result)))
    if not result.ok:
        sys.exit(1)


@cli.group()
def adapters() -> None:
    """Ingestion adapters (built-in and installed plugins)."""


@adapters.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def adapters_list(as_json: bool) -> None:
    """Show the installed adapters with their versions and the record kinds they make."""
    from lienthong.adapters.registry import Registry

    registry = Registry()
    rows = [
        {"name": a.name, "version": a.version, "kinds": sorted(a.kinds), "description": a.description, "package": a.distribution}
        for a in registry.installed()
    ]
    if as_json:
        click.echo(json.dumps({"adapters": rows, "broken": registry.broken}, ensure_ascii=False, indent=2))
        return
    for row in rows:
        click.echo(f"{row['name']:<16} {row['version']:<8} {','.join(row['kinds']):<28} {row['description']} [{row['package']}]")
    for name, error in registry.broken.items():
        click.echo(f"{name:<16} BROKEN   {error}", err=True)


@cli.command()
@click.option("--children", default=3, show_default=True, type=click.IntRange(1, 50), help="Subordinate nodes directly under the province.")
@click.option(
    "--records",
    "volume",
    default=20_000,
    show_default=True,
    type=click.IntRange(0, 2_000_000),
    help="Generated indicator values per subordinate node.",
)
@click.option("--keep", is_flag=True, help="Keep the nodes' directories and print where they are.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for all data to arrive.")
def demo(children: int, volume: int, keep: bool, timeout: float) -> None:
    """Run a province with subordinate nodes (one two tiers down) on this machine and watch data flow."""
    from .demo import run_demo

    sys.exit(run_demo(children, volume, keep, timeout))


# ------------------------------------------------------------------ command groups in their own modules

from . import (  # noqa: E402 (after the core commands)
    backup_cmd,
    dispute_cmd,
    doctor_cmd,
    feedback_cmd,
    files_cmd,
    ingest_cmd,
    init_cmd,
    query_cmd,
    reparent_cmd,
    reports_cmd,
    requests_cmd,
    rotate_cmd,
    service_cmd,
    share_cmd,
    sink_cmd,
    token_cmd,
    user_cmd,
    verify_cmd,
)

cli.add_command(ingest_cmd.ingest)
cli.add_command(token_cmd.token)
cli.add_command(init_cmd.init)
cli.add_command(doctor_cmd.doctor)
cli.add_command(service_cmd.service)
cli.add_command(query_cmd.query)
cli.add_command(feedback_cmd.feedback)
cli.add_command(reports_cmd.reports)
cli.add_command(requests_cmd.requests)
cli.add_command(verify_cmd.verify)
cli.add_command(reparent_cmd.reparent)
ca.add_command(rotate_cmd.rotate_issuing)
cli.add_command(backup_cmd.backup)
cli.add_command(backup_cmd.restore)

from .audit_events_cmd import events as audit_events  # noqa: E402 (after the audit group)

audit.add_command(audit_events)
cli.add_command(files_cmd.files)
cli.add_command(share_cmd.share)
cli.add_command(user_cmd.user)
cli.add_command(dispute_cmd.dispute)

from . import report_cmd, satisfaction_cmd  # noqa: E402 (the activity report; satisfaction surveys)

cli.add_command(report_cmd.report)
feedback_cmd.feedback.add_command(satisfaction_cmd.import_survey)

from .approve_cmd import approve  # noqa: E402 (after the core commands)

cli.add_command(approve)
cli.add_command(sink_cmd.sink)


def show_error(message: str, hint: str) -> None:
    """The two lines of every expected failure, in the operator's language."""
    click.echo(_("Error: {0}").format(cli_i18n.translate_message(message)), err=True)
    if hint:
        click.echo(_("Try: {0}").format(cli_i18n.translate_message(hint)), err=True)


def main() -> None:
    permissions.private_umask()  # every file a command makes is the user's alone (node/permissions.py)
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo(_("Aborted."), err=True)
        sys.exit(130)
    except LienthongError as exc:
        show_error(exc.message, exc.hint)
        sys.exit(1)
    except sqlite3.DatabaseError as exc:
        # Reads all over the code meet a damaged file; it is one sentence here, never a traceback.
        show_error(
            _("the node's database is damaged or unreadable ({0})").format(exc),
            _("stop the node, restore its store from a backup (lienthong backup makes one), and start it again"),
        )
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
