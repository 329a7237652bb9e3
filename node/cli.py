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
import tomllib
from pathlib import Path

import click

from lienthong.config import settings as config
from lienthong.sync.clock import HybridClock
from lienthong.sync.errors import LienthongError
from lienthong.sync.privacy import PSEUDONYM_KEY_FILE
from lienthong.sync.store import Store

from . import logs, permissions, runtime
from .cli_common import DIR_OPTION, audited, aware_datetime, fail, load_settings
from .intake import StoreSink
from .trust import ca as ca_ops
from .trust import issue, pseudonyms, tls
from .trust.crl import CRL_FILE, add_home, enforcing_homes, write_crl

# Node certificates are short-lived (30 days); nodes renew their own over the
# replication link after two thirds of that (node/trust/renewal.py).
NODE_CERT_DAYS = issue.DEFAULT_VALIDITY_DAYS


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="lienthong")
def cli() -> None:
    """lienthong: a node that shares an IOC unit's reports, feedback and indicators with its parent."""


# ------------------------------------------------------------------ ca


@cli.group()
def ca() -> None:
    """The provincial certificate authority."""


@ca.command("init")
@click.argument("ca_dir", type=click.Path(file_okay=False, path_type=Path))
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
    sealed = f"mode 0600{', encrypted' if passphrase else ''}"
    click.echo(f"Created CA {name!r}: root {ca_dir / root.ROOT_CERT} and its key {ca_dir / root.ROOT_KEY} ({sealed});")
    click.echo(f"  issuing CA {ca_dir / tls.CA_CERT} and its key {ca_dir / tls.CA_KEY} (a year; signs nodes, renewals, enrollments).")
    click.echo(f"Fingerprint of the root (SHA-256): {ca_ops.ca_fingerprint(ca_dir)}")
    click.echo(f"Now move {ca_dir / root.ROOT_KEY} to offline media and delete it here (docs/security.md, Certificate authority).")
    secret = pseudonyms.for_ca(ca_dir)
    click.echo(f"Pseudonym secret {ca_dir / PSEUDONYM_KEY_FILE} (key id {secret.key_id}, mode 0600): units get it at enrollment.")
    click.echo(f"Next: lienthong init --dir NODE_DIR --mode provincial --id ID --ca {ca_dir}")


@ca.command("rotate-pseudonym")
@click.argument("ca_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
def ca_rotate_pseudonym(ca_dir: Path) -> None:
    """Start a new generation of the citizens' pseudonym secret (units take it when they next enroll)."""
    ca_ops.load_ca_cert(ca_dir)
    key = pseudonyms.rotate(ca_dir)
    audited(ca_dir, "admin.command", "ca rotate-pseudonym", key_id=key.key_id)
    click.echo(f"New pseudonym key id {key.key_id}: pseudonyms made with it do not match earlier ones (their key id differs).")


@ca.command("issue")
@click.argument("ca_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--csr", "csr_file", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path), help="The node's CSR (tls/node.csr)."
)
@click.option("--role", type=click.Choice(issue.ROLES), required=True, help="provincial or district, as the node's --mode.")
@click.option("--parent", default="", help="The node's parent id, recorded with the certificate.")
@click.option("--days", default=NODE_CERT_DAYS, show_default=True, type=click.IntRange(1, 3650), help="Validity in days.")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Where to write the certificate.")
def ca_issue(ca_dir: Path, csr_file: Path, role: str, parent: str, days: int, out_file: Path) -> None:
    """Sign a node's certificate request (offline path: CSR file in, certificate file out)."""
    if not out_file.parent.is_dir() or not os.access(out_file.parent, os.W_OK):
        # Checked before issuing: a certificate recorded in the registry must also reach its file.
        fail(
            f"cannot write the certificate to {out_file}: {out_file.parent} is not a folder you can write to",
            "give --out in an existing folder",
        )
    cert = issue.issue_from_csr(ca_dir, csr_file.read_bytes(), role, parent, days, ca_ops.passphrase_from_env())
    out_file.write_bytes(cert)
    if role == "district":
        pseudonyms.install(pseudonyms.for_ca(ca_dir), out_file.parent)
        click.echo(f"Wrote {out_file.parent / PSEUDONYM_KEY_FILE} (mode 0600): move it to the node's tls/ folder.")
    from cryptography import x509

    issued = x509.load_pem_x509_certificate(cert)
    audited(
        ca_dir, "cert.issue", issued.subject.rfc4514_string(), serial=format(issued.serial_number, "x"), role=role, parent=parent, days=days
    )
    anchor = ca_dir / ("root.crt" if (ca_dir / "root.crt").exists() else tls.CA_CERT)
    click.echo(f"Wrote {out_file}. On the node: copy it to tls/node.crt and {anchor} to tls/ca.crt.")


@ca.command("list")
@click.argument("ca_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
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
        click.echo(f"{row['node_id']:<20} {row['role']:<11} {row['status']:<8} until {row['not_after'][:10]}  serial {row['serial']}")


@ca.command("revoke")
@click.argument("ca_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("node_or_serial")
@click.option("--reason", default="", help="Why (e.g. key_compromise, superseded, or free text).")
@click.option(
    "--compromised-at",
    default="",
    metavar="TIME",
    help="With --reason key_compromise: since when the key is not to be trusted (e.g. 2026-12-01T08:00:00+07:00).",
)
def ca_revoke(ca_dir: Path, node_or_serial: str, reason: str, compromised_at: str) -> None:
    """Revoke a node's certificates (by node id) or one certificate (by serial), and rewrite the CRL."""
    since = _compromise_time(compromised_at, reason) if compromised_at else None
    serials = ca_ops.revoke(ca_dir, node_or_serial, reason, since)
    crl = write_crl(ca_dir, ca_ops.passphrase_from_env())
    audited(ca_dir, "cert.revoke", node_or_serial, serials=serials, reason=reason, compromised_at=compromised_at)
    if serials:
        click.echo(f"Revoked {', '.join(serials)}; the revocation list {crl} is updated.")
    else:
        click.echo(f"Nothing to revoke: {node_or_serial} has no valid certificate. {crl} is rewritten.")
    if not enforcing_homes(ca_dir, runtime.running_info):
        click.echo(f"Warning: no running node enforces {crl}: start the province's node (made with `init --ca {ca_dir}`).", err=True)


def _compromise_time(text: str, reason: str) -> dt.datetime:
    if reason.strip().lower().replace(" ", "_") != "key_compromise":
        fail("--compromised-at states when a key was compromised", "give it with --reason key_compromise")
    return aware_datetime(text, "--compromised-at", "2026-12-01T08:00:00+07:00")


# ------------------------------------------------------------------ init


@cli.command()
@DIR_OPTION
@click.option(
    "--mode",
    type=click.Choice(["provincial", "district"]),
    required=True,
    help="provincial accepts children; district is any subordinate unit.",
)
@click.option("--id", "node_id", required=True, help="This node's id, usually its unit code (e.g. 86-28894).")
@click.option("--name", default="", help="A name for people, e.g. 'Xã Ba Tri'.")
@click.option("--listen", default="", metavar="HOST:PORT", help="Accept child nodes here (default for provincial: 0.0.0.0:7443).")
@click.option("--parent", default="", metavar="HOST:PORT", help="The parent node's address (required for district mode).")
@click.option("--parent-id", default="", help="The parent's node id; when given, its certificate must carry it.")
@click.option("--ca", "ca_dir", type=click.Path(file_okay=False, path_type=Path), help="Issue this node's certificate from this CA.")
@click.option("--san", multiple=True, metavar="NAME", help="Extra host name or IP the node is reached at (repeatable).")
@click.option("--unit", "units", multiple=True, metavar="CODE", help="A unit code this node answers for (repeatable; default: its id).")
@click.option("--agency", "agencies", multiple=True, metavar="CODE", help="Make the inbox folder inbox/CODE/ for this agency (repeatable).")
def init(
    node_dir: Path,
    mode: str,
    node_id: str,
    name: str,
    listen: str,
    parent: str,
    parent_id: str,
    ca_dir: Path | None,
    san: tuple[str, ...],
    units: tuple[str, ...],
    agencies: tuple[str, ...],
) -> None:
    """Create a node directory: configuration, store, inbox and (with --ca) certificate."""
    from lienthong.adapters.intake import agency_folder_name

    for agency in agencies:
        if not agency_folder_name(agency):
            fail(f"--agency {agency!r} cannot be an inbox folder name", "use the agency's code: letters, digits, '-' or '_' (e.g. thongke)")
    if mode == "provincial" and not listen:
        listen = "0.0.0.0:7443"
    if mode == "district" and not parent:
        fail("a district-mode node needs its parent's address", "add --parent HOST:PORT (the provincial node's address)")
    if (node_dir / config.CONFIG_FILE).exists():
        fail(f"{node_dir} already holds a node", "use another --dir, or run the existing node")
    # The province made from a CA is its home: it enforces the CA's revocation list, no edit needed.
    crl = str((ca_dir / CRL_FILE).absolute()) if ca_dir is not None and mode == "provincial" else ""
    text = config.render(id=node_id, name=name, mode=mode, listen=listen, parent=parent, parent_id=parent_id, units=list(units), crl=crl)
    settings = config.validate(tomllib.loads(text))
    passphrase = ca_ops.passphrase_from_env()
    if ca_dir is not None:
        ca_ops.load_ca(ca_dir, passphrase)  # fail before anything is made
    node_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):  # a folder someone else owns: `run` refuses it in words
        node_dir.chmod(permissions.DIR_MODE)
    hosts = [*([listen.rpartition(":")[0].strip("[]")] if listen else []), *san]
    paths = runtime.tls_paths(node_dir, settings)
    # The node's key is made here and never leaves it; the CA signs a request.
    if ca_dir is not None:
        issue.issue_node(ca_dir, paths, node_id, mode, hosts, NODE_CERT_DAYS, parent_id, passphrase)
        if mode == "district":  # the province's own node never holds the pseudonym secret (docs/security.md)
            pseudonyms.install(pseudonyms.for_ca(ca_dir), paths.key.parent)
    else:
        tls.write_public(paths.key.parent / "node.csr", issue.make_csr(paths.key, node_id, hosts), tls.NODE_FILE_MODE)
    Store.create(node_dir / runtime.STORE_FILE, node_id).close()
    audited(
        node_dir,
        "admin.command",
        "init",
        mode=mode,
        node=node_id,
        parent=parent,
        listen=listen,
        certificate="issued" if ca_dir else "requested",
    )
    if ca_dir is not None:
        audited(ca_dir, "cert.issue", node_id, role=mode, parent=parent_id, days=NODE_CERT_DAYS)
        if crl:
            add_home(ca_dir, node_dir)
    (node_dir / "inbox").mkdir(exist_ok=True)
    for agency in agencies:
        (node_dir / "inbox" / agency).mkdir(exist_ok=True)
    (node_dir / config.CONFIG_FILE).write_text(text, encoding="utf-8")
    click.echo(f"Created {mode} node {node_id!r} in {node_dir}.")
    if ca_dir is None:
        click.echo(
            f"It has no certificate yet. Its request is {paths.key.parent / 'node.csr'}: the CA signs it with "
            f"`lienthong ca issue CA_DIR --csr node.csr --role {mode} --out node.crt`; copy node.crt and ca.crt into {paths.key.parent}."
        )
    click.echo(f"Next: lienthong run --dir {node_dir}")


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
            "the node is unhealthy: " + "; ".join(reasons),
            f"see `lienthong status --dir {node_dir}` and the node's log; `lienthong health --json` shows what was measured",
        )
    click.echo("healthy")
    for warning in details.get("warnings", []):
        click.echo(f"warning: {warning}")


# ------------------------------------------------------------------ data


@cli.command()
@DIR_OPTION
@click.option("--agency", default="", help="The agency the files come from (as an inbox folder name would say).")
@click.option("--adapter", "adapter_name", default="", help="Read the files with this adapter instead of recognising them.")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def ingest(node_dir: Path, agency: str, adapter_name: str, files: tuple[Path, ...]) -> None:
    """Take FILES in, as if dropped into an inbox (the files stay where they are).

    Any format an adapter recognises: canonical JSON Lines, Vietnamese CSV, DHIS2,
    Open311, report manifests. Valid rows are stored, refused rows are listed with
    their reason; the exit code is 1 when anything was refused.
    """
    from lienthong.adapters.held import FileChanged
    from lienthong.adapters.intake import Inbox, Limits, take
    from lienthong.adapters.registry import Registry

    settings = load_settings(node_dir)
    registry = Registry()
    if adapter_name:
        registry.get(adapter_name)  # an UnknownAdapter lists the installed ones
    store = runtime.open_store(node_dir, settings)
    refused_any = False
    try:
        sink = StoreSink(store, HybridClock(store.max_version()), node_dir, runtime.own_units(settings), settings.node.mode == "provincial")
        limits = Limits(max_file_bytes=settings.ingest.max_file_mb * 1024 * 1024)
        for path in files:
            inbox = Inbox(agency=agency, path=path.resolve().parent, adapter=adapter_name)
            try:
                result = take(path, inbox, registry, sink, settings.node.id, limits, move=False)
            except FileChanged as exc:
                click.echo(f"{path}: not taken: {exc}. Try: run the command again once the file is complete.", err=True)
                refused_any = True
                continue
            counts = result["importCount"]
            click.echo(
                f"{path}: {counts['imported']} imported, {counts['updated']} updated, "
                f"{counts['unchanged']} unchanged, {counts['refused']} refused" + (f" [{result['adapter']}]" if result["adapter"] else "")
            )
            if result["status"] == "ERROR":
                click.echo(f"  refused whole: {result['description_en']}", err=True)
            elif result["description_en"]:
                click.echo(f"  {result['description_en']}")
            for conflict in result["conflicts"][:50]:
                where = f" {conflict['field']}:" if conflict["field"] else ""
                click.echo(f"  line {conflict['line']}:{where} {conflict['message_en']}", err=True)
            if counts["refused"] > 50:
                click.echo(f"  … and {counts['refused'] - 50} more refused rows", err=True)
            refused_any = refused_any or result["status"] == "ERROR" or bool(counts["refused"])
    finally:
        store.close()
    if refused_any:
        sys.exit(1)


@cli.group()
def token() -> None:
    """One-time enrollment tokens (on the province)."""


@token.command("create")
@DIR_OPTION
@click.option("--id", "child_id", required=True, help="The node id the token is for (it can enroll no other).")
@click.option("--ttl", default="24h", show_default=True, help="How long the token stays valid (e.g. 30m, 24h, 7d).")
def token_create(node_dir: Path, child_id: str, ttl: str) -> None:
    """Print a one-time token for a new node: it carries this province's enrollment address and CA fingerprint."""
    from .trust import tokens

    settings = load_settings(node_dir)
    if not settings.server.enroll_listen or not settings.tls.ca_dir:
        fail("this node does not enroll new nodes", "set server.enroll_listen and tls.ca_dir in lienthong.toml, and restart it")
    address = settings.server.enroll_address or settings.server.enroll_listen
    if address.startswith(("0.0.0.0:", "[::]:")) or address.endswith(":0"):
        fail(f"new nodes cannot reach {address}", "set server.enroll_address to the host:port they use to reach this node")
    ca_dir = node_dir / settings.tls.ca_dir
    text = tokens.create_token(
        node_dir, child_id, tokens.parse_ttl(ttl), address, ca_ops.ca_fingerprint(ca_dir), province_id=settings.node.id
    )
    audited(node_dir, "admin.command", "token create", node=child_id, ttl=ttl, token_id=tokens.parse_token(text).token_id)
    click.echo(text)


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
    click.echo(f"Enrolled with {parent}: certificate {paths.cert}. Next: lienthong run --dir {node_dir}")


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
def audit_verify(node_dir: Path, head_text: str) -> None:
    """Re-check the hash chain: any edit, deletion or reordering is named; exit 1 if the log was altered."""
    from .trust.audit import AuditLog
    from .trust.audit_chain import AuditError, describe, parse_head

    with AuditLog.open(node_dir) as log_:
        result = log_.verify(parse_head(head_text) if head_text else None)
        if not result.ok:
            # Appended after the damage, so it stays visible, and it goes up to the province
            # (a log too damaged to take it still gets its verdict below).
            with contextlib.suppress(AuditError):
                log_.append("audit.verify_failed", str(result.bad_seq or ""), {"problem": str(result.problem), "reason": result.reason})
    if not result.ok:
        fail(describe(result), result.hint)
    click.echo(describe(result))


@audit.command("head")
@DIR_OPTION
def audit_head(node_dir: Path) -> None:
    """Print the log's head (SEQ:HASH): write it down, or give it to an inspector, to detect a rewrite later."""
    from .trust.audit import AuditLog
    from .trust.audit_chain import format_head

    with AuditLog.open(node_dir) as log_:
        click.echo(format_head(log_.head()))


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
    click.echo(f"Wrote {dest}. {describe(result)}")
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
    feedback_cmd,
    files_cmd,
    query_cmd,
    reparent_cmd,
    reports_cmd,
    requests_cmd,
    rotate_cmd,
    share_cmd,
    sink_cmd,
    user_cmd,
    verify_cmd,
)

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
cli.add_command(sink_cmd.sink)


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
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except LienthongError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        if exc.hint:
            click.echo(f"Try: {exc.hint}", err=True)
        sys.exit(1)
    except sqlite3.DatabaseError as exc:
        # Reads all over the code meet a damaged file; it is one sentence here, never a traceback.
        click.echo(f"Error: the node's database is damaged or unreadable ({exc})", err=True)
        click.echo("Try: stop the node, restore its store from a backup (lienthong backup makes one), and start it again", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
