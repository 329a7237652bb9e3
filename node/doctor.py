"""`lienthong doctor`: everything that stops a node working, checked before it is started or while it runs.

`examine(node_dir)` runs every check and returns `Finding`s: one per problem or warning, each one
sentence with a hint (what to type or change). A problem stops the node working (or soon will);
a warning is worth acting on. The checks, in order:

    config        lienthong.toml parses and is valid (nothing else is checked without it)
    certificate   this node's certificate and its CA's: present, not expired, not expiring soon
    ca            the CA's issuing certificate, when this node is the CA's home (tls.ca_dir)
    revocation    the CA's revocation list (the CA's home): present, signed, not past its next update
    clock         this node's clock against its parent's, as measured at the last handshake
    disk          free space on the store's disk ([store] min_free_mb)
    permissions   the node directory: writable by this user, closed to others
    inotify       the kernel's inotify limits, enough for the inbox folders watched
    inbox         inbox/ and every configured [inbox.X] folder exist and can be written
    parent        the parent answers over mTLS with this node's certificate, and took it at the last handshake

It reuses the health judgement's parts (node/health.py, node/disk.py) and never writes to the node.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lienthong.config import settings as config
from lienthong.sync.clock import MAX_SKEW_MS
from lienthong.sync.errors import LienthongError

from . import permissions
from .disk import disk_state
from .runtime import STORE_FILE, tls_paths

CHECKS = ("config", "certificate", "ca", "revocation", "clock", "disk", "permissions", "inotify", "inbox", "parent")
CERT_WARN_DAYS = 7  # a node certificate renews itself after 20 of its 30 days: 7 left means renewal is failing
CA_WARN_DAYS = 30  # time to rotate the issuing CA (`lienthong ca rotate-issuing`) or plan a new root
CRL_WARN_S = 86_400  # the revocation list is rewritten by `ca revoke`; a day before it goes stale, say so
INOTIFY = Path("/proc/sys/fs/inotify")
INOTIFY_SPARE_WATCHES = 1024  # other programs of the same user watch files too
INOTIFY_MIN_INSTANCES = 8


@dataclass(frozen=True)
class Finding:
    check: str
    level: str  # "problem" | "warning"
    message: str
    hint: str


@dataclass
class Report:
    node_dir: Path
    findings: list[Finding]
    checked: dict[str, str]  # check -> "ok" | "problem" | "warning" | "skipped"

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "problem"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "dir": str(self.node_dir),
            "ok": not self.problems,
            "problems": len(self.problems),
            "warnings": len(self.findings) - len(self.problems),
            "checks": self.checked,
            "findings": [asdict(f) for f in self.findings],
        }


class _Run:
    def __init__(self, node_dir: Path) -> None:
        self.node_dir = node_dir
        self.findings: list[Finding] = []
        self.checked: dict[str, str] = {}

    def problem(self, check: str, message: str, hint: str) -> None:
        self.findings.append(Finding(check, "problem", message, hint))

    def warning(self, check: str, message: str, hint: str) -> None:
        self.findings.append(Finding(check, "warning", message, hint))

    def done(self, check: str, skipped: bool = False) -> None:
        levels = {f.level for f in self.findings if f.check == check}
        self.checked[check] = "problem" if "problem" in levels else "warning" if levels else "skipped" if skipped else "ok"


def examine(node_dir: Path, *, now: float | None = None, timeout: float = 3.0, inotify: Path = INOTIFY) -> Report:
    """Every check on `node_dir` (see the module docstring)."""
    now = time.time() if now is None else now
    run = _Run(node_dir)
    try:
        settings = config.load(node_dir)
    except LienthongError as exc:
        run.problem("config", exc.message, exc.hint)
        run.done("config")
        for check in CHECKS[1:]:
            run.checked[check] = "skipped"
        return Report(node_dir, run.findings, run.checked)
    run.done("config")
    steps = (
        ("certificate", lambda: _certificates(run, settings, now)),
        ("ca", lambda: _issuing_ca(run, settings, now)),
        ("revocation", lambda: _revocation(run, settings, now)),
        ("clock", lambda: _clock(run, settings)),
        ("disk", lambda: _disk(run, settings)),
        ("permissions", lambda: _permissions(run)),
        ("inotify", lambda: _inotify(run, settings, inotify)),
        ("inbox", lambda: _inbox(run, settings)),
        ("parent", lambda: _parent(run, settings, timeout)),
    )
    for name, step in steps:
        skipped = step() is False
        run.done(name, skipped)
    return Report(node_dir, run.findings, run.checked)


def _days_left(not_after: dt.datetime, now: float) -> float:
    return (not_after.timestamp() - now) / 86_400


def _expiry(run: _Run, check: str, what: str, path: Path, now: float, warn_days: int, hint: str) -> None:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        run.problem(check, f"{what} {path} is missing", hint)
        return
    except (OSError, ValueError) as exc:
        run.problem(check, f"{what} {path} cannot be read: {exc}", hint)
        return
    left = _days_left(cert.not_valid_after_utc, now)
    until = cert.not_valid_after_utc.date().isoformat()
    if left < 0:
        run.problem(check, f"{what} {path} expired on {until}", hint)
    elif left < warn_days:
        run.warning(check, f"{what} {path} expires on {until} ({left:.0f} days left)", hint)


def _certificates(run: _Run, settings: config.Settings, now: float) -> None:
    paths = tls_paths(run.node_dir, settings)
    if not paths.cert.exists() and (paths.key.parent / "node.csr").exists():
        run.problem(
            "certificate",
            f"this node has no certificate yet ({paths.cert} is missing)",
            f"enroll it: `lienthong enroll --dir {run.node_dir} TOKEN` with a token from the province, "
            f"or have the CA sign {paths.key.parent / 'node.csr'} (`lienthong ca issue`)",
        )
        return
    else:
        renew = "it renews itself over the link to its parent: see `lienthong status` for why it did not"
        if settings.tls.ca_dir or not settings.parent.address:
            renew = "it renews itself from the CA (tls.ca_dir); see the node's log for why it did not"
        _expiry(run, "certificate", "this node's certificate", paths.cert, now, CERT_WARN_DAYS, renew)
    _expiry(
        run,
        "certificate",
        "the CA certificate",
        paths.ca,
        now,
        CA_WARN_DAYS,
        "get the province's new CA certificate (`lienthong enroll` again)",
    )


def _issuing_ca(run: _Run, settings: config.Settings, now: float) -> bool:
    if not settings.tls.ca_dir:
        return False
    from .trust.tls import CA_CERT

    ca_dir = run.node_dir / settings.tls.ca_dir
    hint = f"make a new issuing CA: `lienthong ca rotate-issuing {ca_dir}` (with the root key brought back)"
    _expiry(run, "ca", "the issuing CA certificate", ca_dir / CA_CERT, now, CA_WARN_DAYS, hint)
    return True


def _revocation(run: _Run, settings: config.Settings, now: float) -> bool:
    from cryptography import x509

    from .trust.crl import crl_path

    path = crl_path(run.node_dir, settings.tls.crl, settings.tls.ca_dir)
    if path is None:
        return False  # a node below the province: its list comes down the link
    rewrite = f"rewrite it where the CA key is: any `lienthong ca revoke {path.parent} …` does"
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except FileNotFoundError:
        return True  # nothing revoked yet: `lienthong ca revoke` writes the first list
    except (OSError, ValueError) as exc:
        run.problem("revocation", f"the revocation list {path} cannot be read: {exc}", rewrite)
        return True
    next_update = crl.next_update_utc
    if next_update is None:
        return True
    left = next_update.timestamp() - now
    if left < 0:
        run.problem("revocation", f"the revocation list {path} is stale: it was due to be rewritten by {next_update.isoformat()}", rewrite)
    elif left < CRL_WARN_S:
        run.warning("revocation", f"the revocation list {path} is due to be rewritten by {next_update.isoformat()}", rewrite)
    return True


def _open_store(run: _Run) -> Any:
    from lienthong.sync.store import Store

    try:
        return Store.open(run.node_dir / STORE_FILE)
    except Exception:  # the store's own check (status, run) says what is wrong with it
        return None


def _clock(run: _Run, settings: config.Settings) -> bool:
    if not settings.parent.address:
        return False
    from lienthong.sync.upstream import Upstream

    from .status import clock_warning

    store = _open_store(run)
    if store is None:
        return False
    try:
        offset = Upstream(store).uplink_state()["clock_offset_ms"]
    finally:
        store.close()
    if offset is None:
        return False  # never reached its parent: the parent check says so
    ahead = -int(offset)  # this node's clock minus its parent's
    if abs(ahead) > MAX_SKEW_MS:
        run.problem(
            "clock",
            clock_warning("this node's clock", ahead, "its parent's") or "",
            "set the time right and keep it so: `timedatectl set-ntp true` (systemd-timesyncd or chrony)",
        )
    elif abs(ahead) > 60_000:
        run.warning(
            "clock",
            f"this node's clock is {abs(ahead) // 1000} s {'ahead of' if ahead > 0 else 'behind'} its parent's",
            "turn on time synchronisation: `timedatectl set-ntp true`",
        )
    return True


def _disk(run: _Run, settings: config.Settings) -> None:
    try:
        state = disk_state(run.node_dir / STORE_FILE, settings.store.min_free_mb)
    except OSError as exc:
        run.problem("disk", f"the free space of {run.node_dir} cannot be read: {exc.strerror}", "check that the disk is mounted")
        return
    if state["problem"]:
        message, _, hint = state["problem"].partition(": the node stops taking data when it is full; ")
        run.problem("disk", message + ": the node stops taking data when it is full", hint or "free space on that disk")


def _permissions(run: _Run) -> None:
    node_dir = run.node_dir
    if not os.access(node_dir, os.W_OK | os.X_OK):
        owner = node_dir.stat().st_uid
        run.problem(
            "permissions",
            f"this user cannot write to {node_dir} (it belongs to user id {owner})",
            "run lienthong as the user the node runs as (e.g. `sudo -u lienthong lienthong …`)",
        )
        return
    exposed = permissions.exposed(node_dir)
    if exposed:
        shown = ", ".join(str(p) for p in exposed[:3]) + (f" and {len(exposed) - 3} more" if len(exposed) > 3 else "")
        run.warning(
            "permissions",
            f"other users can read files of the node ({shown}); its store and keys must stay the node user's alone",
            f"`chmod -R go-rwx {node_dir}` (the node also closes them when it starts)",
        )


def _watched_folders(run: _Run, settings: config.Settings) -> list[Path]:
    roots = [run.node_dir / "inbox"]
    roots += [
        Path(s.path) if Path(s.path).is_absolute() else run.node_dir / s.path
        for s in settings.inbox.values()
        if s.path and not s.poll_seconds
    ]
    out = []
    for root in roots:
        if root.is_dir():
            out.append(root)
            out += [Path(folder) / d for folder, dirs, _ in os.walk(root) for d in dirs]
    return out


def _inotify(run: _Run, settings: config.Settings, inotify: Path) -> bool:
    try:
        watches = int((inotify / "max_user_watches").read_text().strip())
        instances = int((inotify / "max_user_instances").read_text().strip())
    except (OSError, ValueError):
        return False  # not Linux, or not readable: the inboxes fall back to rescans
    needed = len(_watched_folders(run, settings)) + INOTIFY_SPARE_WATCHES
    if watches < needed:
        run.problem(
            "inotify",
            f"the kernel allows {watches} inotify watches per user; the inbox folders need about {needed}",
            "raise it: `echo fs.inotify.max_user_watches=524288 | sudo tee /etc/sysctl.d/60-lienthong.conf && sudo sysctl --system`",
        )
    if instances < INOTIFY_MIN_INSTANCES:
        run.problem(
            "inotify",
            f"the kernel allows {instances} inotify instances per user (at least {INOTIFY_MIN_INSTANCES} are needed)",
            "raise it: `echo fs.inotify.max_user_instances=512 | sudo tee -a /etc/sysctl.d/60-lienthong.conf && sudo sysctl --system`",
        )
    return True


def _inbox(run: _Run, settings: config.Settings) -> None:
    inbox = run.node_dir / "inbox"
    folders = [(inbox, f"mkdir {inbox}")]
    for agency, options in settings.inbox.items():
        path = Path(options.path) if options.path else inbox / agency
        if options.path and not path.is_absolute():
            path = run.node_dir / path
        folders.append((path, f"make it (`mkdir -p {path}`) or correct [inbox.{agency}] path in {config.CONFIG_FILE}"))
    for path, hint in folders:
        if not path.is_dir():
            run.problem("inbox", f"the inbox folder {path} is missing", hint)
        elif not os.access(path, os.W_OK | os.X_OK):
            run.problem("inbox", f"the inbox folder {path} cannot be written by this user", f"give the node's user write access to {path}")
    if settings.node.mode == "district" and inbox.is_dir() and not settings.inbox and not any(p.is_dir() for p in inbox.iterdir()):
        run.warning(
            "inbox",
            f"{inbox} has no agency folder: agencies' files have nowhere to go",
            f"make one per agency, e.g. `mkdir {inbox / 'thongke'}`",
        )


def _parent(run: _Run, settings: config.Settings, timeout: float) -> bool:
    if not settings.parent.address:
        return False
    from lienthong.sync.upstream import Upstream

    from .healthcheck import check

    address = settings.parent.address
    paths = tls_paths(run.node_dir, settings)
    if not paths.cert.exists() or not paths.ca.exists():
        return False  # the certificate check said so; without them the parent cannot be asked
    server_name = settings.parent.id or address.rpartition(":")[0].strip("[]")
    try:
        check(address, paths.load(), server_name, timeout)
    except LienthongError as exc:
        run.problem(
            "parent",
            f"the parent at {address} does not answer: {exc.message.partition(': ')[2] or exc.message}",
            f"check parent.address in {config.CONFIG_FILE}, that the parent runs, and that the firewall lets this machine reach port "
            f"{address.rpartition(':')[2]}",
        )
    except (OSError, ValueError) as exc:
        run.problem("parent", f"this node's TLS files cannot be read: {exc}", "see the certificate check")
    store = _open_store(run)
    if store is not None:
        try:
            refusal = Upstream(store).refusal()
        finally:
            store.close()
        if refusal is not None:
            run.problem(
                "parent",
                f"the parent refused this node at its last handshake: {refusal['reason']}",
                "ask the province: the certificate may be revoked or unknown to it, or parent.id wrong",
            )
    return True
