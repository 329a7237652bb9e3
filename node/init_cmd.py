"""`lienthong init`: make a node directory, and say the commands that lead from it to a running node.

A commune, ward or agency node is `mode = "district"` in its configuration (the role its
certificate carries); `--mode` takes the unit's own word for it. The province made from a CA
(`--ca`) is the CA's home: `tls.ca_dir` names the CA, so it signs renewals and enrollments and
enforces the CA's revocation list with no edit. Every command printed after "Next:" runs as
printed once its upper-case placeholders (CA_DIR, PROVINCE_DIR, TOKEN) are filled in
(tests/test_init_next.py runs them).
"""

from __future__ import annotations

import contextlib
import tomllib
from pathlib import Path

import click

from lienthong.config import settings as config
from lienthong.sync.store import Store

from . import permissions, runtime
from .cli_common import DIR_OPTION, audited, fail
from .trust import ca as ca_ops
from .trust import issue, pseudonyms, tls
from .trust.crl import add_home

# The unit's own word for its kind; every one but the province is a subordinate ("district") node.
MODES = {"provincial": "provincial", "commune": "district", "ward": "district", "agency": "district", "district": "district"}


def _hosts(listen: str, san: tuple[str, ...]) -> list[str]:
    return [*([listen.rpartition(":")[0].strip("[]")] if listen else []), *san]


def _enroll_address(enroll_listen: str, enroll_address: str, san: tuple[str, ...]) -> str:
    """Where new nodes reach the enrollment port: given, or the first --san at that port when it listens on every address."""
    if enroll_address or not enroll_listen:
        return enroll_address
    host, _, port = enroll_listen.rpartition(":")
    if host.strip("[]") in ("0.0.0.0", "::") and san:
        return f"{san[0]}:{port}"
    return ""


@click.command()
@DIR_OPTION
@click.option(
    "--mode",
    type=click.Choice(list(MODES)),
    required=True,
    help="provincial accepts children; commune, ward and agency (or district, the same) replicate to a parent.",
)
@click.option("--id", "node_id", required=True, help="This node's id, usually its unit code (e.g. 86-28894).")
@click.option("--name", default="", help="A name for people, e.g. 'Xã Ba Tri'.")
@click.option("--listen", default="", metavar="HOST:PORT", help="Accept child nodes here (default for provincial: 0.0.0.0:7443).")
@click.option("--parent", default="", metavar="HOST:PORT", help="The parent node's address (required for all but provincial).")
@click.option("--parent-id", default="", help="The parent's node id; when given, its certificate must carry it.")
@click.option("--ca", "ca_dir", type=click.Path(file_okay=False, path_type=Path), help="Issue this node's certificate from this CA.")
@click.option("--san", multiple=True, metavar="NAME", help="Extra host name or IP the node is reached at (repeatable).")
@click.option("--unit", "units", multiple=True, metavar="CODE", help="A unit code this node answers for (repeatable; default: its id).")
@click.option("--agency", "agencies", multiple=True, metavar="CODE", help="Make the inbox folder inbox/CODE/ for this agency (repeatable).")
@click.option(
    "--enroll-listen",
    default="",
    metavar="HOST:PORT",
    help="Provincial with --ca: new nodes enroll here with a one-time token (e.g. 0.0.0.0:7444).",
)
@click.option(
    "--enroll-address",
    default="",
    metavar="HOST:PORT",
    help="The address new nodes use to reach --enroll-listen (default: the first --san at its port).",
)
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
    enroll_listen: str,
    enroll_address: str,
) -> None:
    """Create a node directory: configuration, store, inbox folders and (with --ca) certificate."""
    from lienthong.adapters.inbox_names import agency_folder_name

    kind, mode = mode, MODES[mode]
    for agency in agencies:
        if not agency_folder_name(agency):
            fail(f"--agency {agency!r} cannot be an inbox folder name", "use the agency's code: letters, digits, '-' or '_' (e.g. thongke)")
    if mode == "provincial" and not listen:
        listen = "0.0.0.0:7443"
    if mode == "district" and not parent:
        fail(f"a {kind} node needs its parent's address", "add --parent HOST:PORT (the provincial node's address)")
    if (enroll_listen or enroll_address) and (mode != "provincial" or ca_dir is None):
        fail("only the province made from its CA enrolls new nodes", "give --enroll-listen with --mode provincial and --ca CA_DIR")
    if (node_dir / config.CONFIG_FILE).exists():
        fail(f"{node_dir} already holds a node", "use another --dir, or run the existing node")
    # The province made from a CA is its home: it signs renewals and enrollments and enforces the
    # CA's revocation list (tls.crl empty: CA_DIR/ca.crl.pem), with no edit.
    home = str(ca_dir.absolute()) if ca_dir is not None and mode == "provincial" else ""
    text = config.render(
        id=node_id,
        name=name,
        mode=mode,
        listen=listen,
        parent=parent,
        parent_id=parent_id,
        units=list(units),
        ca_dir=home,
        enroll_listen=enroll_listen,
        enroll_address=_enroll_address(enroll_listen, enroll_address, san),
    )
    settings = config.validate(tomllib.loads(text))
    passphrase = ca_ops.passphrase_from_env()
    if ca_dir is not None:
        ca_ops.load_ca(ca_dir, passphrase)  # fail before anything is made
    node_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):  # a folder someone else owns: `run` refuses it in words
        node_dir.chmod(permissions.DIR_MODE)
    paths = runtime.tls_paths(node_dir, settings)
    # The node's key is made here and never leaves it; the CA signs a request.
    if ca_dir is not None:
        issue.issue_node(ca_dir, paths, node_id, mode, _hosts(listen, san), issue.DEFAULT_VALIDITY_DAYS, parent_id, passphrase)
        if mode == "district":  # the province's own node never holds the pseudonym secret (docs/security.md)
            pseudonyms.install(pseudonyms.for_ca(ca_dir), paths.key.parent)
    else:
        tls.write_public(paths.key.parent / "node.csr", issue.make_csr(paths.key, node_id, _hosts(listen, san)), tls.NODE_FILE_MODE)
    Store.create(node_dir / runtime.STORE_FILE, node_id).close()
    audited(
        node_dir,
        "admin.command",
        "init",
        mode=mode,
        kind=kind,
        node=node_id,
        parent=parent,
        listen=listen,
        certificate="issued" if ca_dir else "requested",
    )
    if ca_dir is not None:
        audited(ca_dir, "cert.issue", node_id, role=mode, parent=parent_id, days=issue.DEFAULT_VALIDITY_DAYS)
        if home:
            add_home(ca_dir, node_dir)
    (node_dir / "inbox").mkdir(exist_ok=True)
    for agency in agencies:
        (node_dir / "inbox" / agency).mkdir(exist_ok=True)
    (node_dir / config.CONFIG_FILE).write_text(text, encoding="utf-8")
    click.echo(f"Created {kind} node {node_id!r} in {node_dir}.")
    for line in next_steps(node_dir, settings, kind, ca_dir is not None, paths.key.parent):
        click.echo(line)


def next_steps(node_dir: Path, settings: config.Settings, kind: str, certified: bool, tls_dir: Path) -> list[str]:
    """The "Next:" lines: commands to paste, in order, with upper-case placeholders only for what this node cannot know."""
    lines = ["Next:"]
    if not certified:
        role, parent_id = settings.node.mode, settings.parent.id
        if role == "district":
            lines += [
                "  It has no certificate yet. Either enroll with a one-time token from the province:",
                f"    lienthong token create --dir PROVINCE_DIR --id {settings.node.id}      (on the province)",
                f"    lienthong enroll --dir {node_dir} TOKEN",
                "  or, offline:",
            ]
        else:
            lines.append("  It has no certificate yet:")
        lines += [
            f"    take its request {tls_dir / 'node.csr'} to the CA, sign it there and bring back both files:",
            f"    lienthong ca issue CA_DIR --csr {tls_dir / 'node.csr'} --role {role}"
            + (f" --parent {parent_id}" if parent_id else "")
            + f" --out {tls_dir / 'node.crt'}",
            f"    cp CA_DIR/root.crt {tls_dir / 'ca.crt'}",
        ]
    lines += [f"  lienthong doctor --dir {node_dir}", f"  lienthong run --dir {node_dir}"]
    if settings.server.enroll_listen:
        lines.append(
            f"  lienthong token create --dir {node_dir} --id NEW_NODE_ID      (once it runs: the token a new commune enrolls with)"
        )
    return lines
