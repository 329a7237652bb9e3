"""A node's settings: `lienthong.toml` in the node directory.

`load(dir)` reads and validates it; every error names the field path and the bad
value (`parent.address: must be host:port (got 'foo')`). `render(...)` writes the
commented file `lienthong init` creates; `example.toml` beside this module is the
documented reference, parsed by a test.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tomlkit
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

CONFIG_FILE = "lienthong.toml"
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _host_port(value: str) -> str:
    if value == "":
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be host:port (got {value!r})")
    return value


def _node_id(value: str) -> str:
    if not _NODE_ID.match(value):
        raise ValueError(f"must be letters, digits, '.', '_' or '-', at most 64 (got {value!r})")
    return value


HostPort = Annotated[str, AfterValidator(_host_port)]
NodeId = Annotated[str, AfterValidator(_node_id)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSettings(_Section):
    id: NodeId
    name: str = ""
    mode: Literal["provincial", "district"]
    # The unit codes this node answers for; records are taken for these and the units below them.
    units: list[str] = []


class ServerSettings(_Section):
    listen: HostPort = ""
    enroll_listen: HostPort = ""
    enroll_address: HostPort = ""


class ParentSettings(_Section):
    address: HostPort = ""
    id: str = ""


class TlsSettings(_Section):
    ca: str = "tls/ca.crt"
    cert: str = "tls/node.crt"
    key: str = "tls/node.key"
    crl: str = ""
    ca_dir: str = ""


class ReplicationSettings(_Section):
    batch_size: int = Field(4000, ge=1, le=10_000)
    window: int = Field(8, ge=1, le=64)
    poll_interval: float = Field(0.2, gt=0, le=60)
    backoff_initial: float = Field(0.5, gt=0, le=60)
    backoff_max: float = Field(30.0, gt=0, le=3600)


class IngestSettings(_Section):
    max_file_mb: int = Field(512, ge=1, le=100_000)
    settle_seconds: float = Field(2.0, gt=0, le=3600)
    rescan_seconds: float = Field(30.0, gt=0, le=86_400)


class InboxSettings(_Section):
    adapter: str = ""
    path: str = ""
    poll_seconds: float = Field(0.0, ge=0, le=3600)
    atomic: bool = False
    sheet: str = Field("", max_length=100)  # workbooks: the sheet to read; '' for the first visible one


class ShareRule(_Section):
    # A standing share (province only): `what` of `period` ("" every period), optionally only
    # these `indicators`, goes down to the nodes answering for the `to` units (`lienthong share`).
    what: Literal["indicators", "reports"]
    period: str = ""
    indicators: list[str] = []
    to: list[str] = Field(min_length=1)


class SharingSettings(_Section):
    personal_data_upward: bool = False
    shares: list[ShareRule] = []


class StoreSettings(_Section):
    # Below this much free space on the store's disk the node warns (log, status): a store
    # needs room for its write-ahead log long before the disk is actually full.
    min_free_mb: int = Field(256, ge=0, le=1_000_000)


class HealthSettings(_Section):
    # Seconds without reaching the parent before `lienthong health` says unhealthy.
    max_silence: float = Field(600.0, gt=0, le=30 * 86_400)


class ApprovalSettings(_Section):
    # Completeness, roll-ups and exports count only data its unit approved (`lienthong approve`),
    # unless a command is told otherwise (--include-unapproved); the province's choice.
    count_only_approved: bool = False


class FilesSettings(_Section):
    # Files (attachments) fetched from other nodes: the largest one taken (MB), and the most
    # taken of any one origin node in all (MB). Larger ones are refused, shown in `status`.
    max_file_mb: int = Field(2048, ge=1, le=1_000_000)
    max_node_mb: int = Field(51_200, ge=1, le=100_000_000)


class WebSettings(_Section):
    listen: HostPort = "127.0.0.1:8080"
    tls_cert: str = ""
    tls_key: str = ""
    silence_minutes: int = Field(60, ge=1, le=100_000)


def _no_password(value: str) -> str:
    # A password written in lienthong.toml would be read by anyone who may read the node's settings.
    in_url = "://" in value and bool(urlsplit(value).password)
    if in_url or re.search(r"(^|\s)password\s*=", value):
        raise ValueError("must not hold a password: put it in password_file or the environment (password_env)")
    return value


class PostgresSinkSettings(_Section):
    # libpq connection string or URL, without its password ('' = no sink).
    dsn: Annotated[str, AfterValidator(_no_password)] = ""
    # The password: a file holding it (one line), or the name of an environment variable; neither
    # = libpq's own (PGPASSWORD, ~/.pgpass) or none.
    password_file: str = ""
    password_env: str = ""
    # Change-log entries per PostgreSQL transaction.
    batch: int = Field(50_000, ge=1, le=10_000_000)


class SinkSettings(_Section):
    postgres: PostgresSinkSettings = PostgresSinkSettings()


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class DisplaySettings(_Section):
    # The time zone people read times in (tables, status); stored times stay UTC.
    timezone: str = "Asia/Ho_Chi_Minh"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value in ("UTC", "Asia/Ho_Chi_Minh") or re.fullmatch(r"[+-]\d\d:\d\d", value):
            return value
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"must be a time zone such as Asia/Ho_Chi_Minh or +07:00 (got {value!r})") from None
        return value


class Settings(_Section):
    node: NodeSettings
    server: ServerSettings = ServerSettings()
    parent: ParentSettings = ParentSettings()
    tls: TlsSettings = TlsSettings()
    replication: ReplicationSettings = ReplicationSettings()
    ingest: IngestSettings = IngestSettings()
    inbox: dict[str, InboxSettings] = {}
    sharing: SharingSettings = SharingSettings()
    store: StoreSettings = StoreSettings()
    health: HealthSettings = HealthSettings()
    approval: ApprovalSettings = ApprovalSettings()
    files: FilesSettings = FilesSettings()
    log: LogSettings = LogSettings()
    web: WebSettings = WebSettings()
    display: DisplaySettings = DisplaySettings()
    sink: SinkSettings = SinkSettings()

    @model_validator(mode="after")
    def _mode_needs_links(self) -> Settings:
        if self.node.mode == "provincial" and not self.server.listen:
            raise ValueError("server.listen: a provincial node must listen for its children (got '')")
        if self.node.mode == "district" and not self.parent.address:
            raise ValueError("parent.address: a district-mode node needs its parent's host:port (got '')")
        return self


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "is not a setting lienthong knows (check its spelling)"
        elif item["type"] == "missing":
            message = "is required"
        elif "input" in item and f"got {item['input']!r}" not in message and item["type"] != "value_error":
            message = f"{message} (got {item['input']!r})"
        lines.append(f"{path}: {message}" if path else message)
    return "; ".join(lines)


def load(node_dir: Path) -> Settings:
    path = node_dir / CONFIG_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no {CONFIG_FILE} in {node_dir}", "create the node with `lienthong init --dir DIR ...`") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", "fix the syntax at that line") from None
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}", f"fix the value in {path}") from None


def validate(data: dict[str, object]) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc), "fix the value and run the command again") from None


TEMPLATE = """\
# lienthong node configuration.
# Reference for every setting: docs/configuration.md. Edit, then restart the node.

[node]
# This node's id. It is bound into the node's certificate: changing it here alone
# makes the node unable to connect. Use the unit code, e.g. "86-28894".
id = {id}
# A name for people (shown by `lienthong status`).
name = {name}
# provincial: accepts child nodes. district: any subordinate unit (commune, ward,
# agency); it replicates to its parent and may have children of its own.
mode = {mode}
# Unit codes this node answers for (empty: its id). Files may carry records for
# these units and the units below them in the province's unit registry.
units = {units}

[server]
# host:port to accept child nodes on (mTLS). Empty: this node has no children.
listen = {listen}
# On the province: host:port where new nodes enroll with a one-time token (TLS,
# no client certificate; needs tls.ca_dir). Empty: enrollment is off.
enroll_listen = {enroll_listen}
# The address new nodes use to reach enroll_listen, written into tokens
# (default: enroll_listen, which must then not be 0.0.0.0).
enroll_address = {enroll_address}

[parent]
# host:port of the parent node. Empty: this node is the top of its tree.
address = {parent}
# When set, the parent's certificate must carry this node id (else the
# certificate must match the host in `address`).
id = {parent_id}

[tls]
# Paths relative to the node directory.
ca = "tls/ca.crt"
cert = "tls/node.crt"
key = "tls/node.key"
# On the province: the CA's revocation list (CA_DIR/ca.crl.pem, rewritten by
# `lienthong ca revoke`). It is checked every half second and sent down to every
# node; revoked certificates are refused, and cut off if connected. Empty with
# ca_dir set (the CA's home, as `init --ca` makes the province): CA_DIR/ca.crl.pem.
crl = {crl}
# On the province, when it is the CA's home: the CA directory, to sign enrolling
# nodes' requests and its own renewals (a protected key's passphrase comes from
# LIENTHONG_CA_PASSPHRASE). `init --mode provincial --ca CA_DIR` sets it.
ca_dir = {ca_dir}

[replication]
# Records per batch, and batches in flight before waiting for acknowledgement.
batch_size = 4000
window = 8
# Seconds between checks for new local changes when idle.
poll_interval = 0.2
# Reconnect backoff in seconds: doubles from `backoff_initial` to `backoff_max`, with jitter.
backoff_initial = 0.5
backoff_max = 30.0

[ingest]
# Files larger than this are refused (MB).
max_file_mb = 512
# A file written in place (not renamed into the inbox) is taken once its size and
# time stay unchanged this many seconds.
settle_seconds = 2.0
# Every inbox is re-listed this often, to catch any missed file event.
rescan_seconds = 30.0

# Each folder in inbox/ is one agency's inbox (folder name = agency code); files
# are recognised by content. Pin an adapter, another folder, polling (for SMB/NFS
# shares) or all-or-nothing files for one agency like this:
# [inbox.soyte]
# adapter = "dhis2-json"       # see `lienthong adapters list`
# path = "/mnt/soyte-export"   # default: inbox/soyte
# poll_seconds = 5.0           # 0: inotify events
# atomic = true                # a file with any bad row is refused whole
# sheet = "Biểu 01"            # workbooks (.xlsx, .xls, .ods): the sheet to read (default: the first)

[sharing]
# Decree 13/2023/NĐ-CP: citizens' name, phone and e-mail in feedback do not go up
# to the parent (a keyed hash stands in, so duplicates are still found) unless
# this unit's policy allows it. They always go down to the unit handling the case.
personal_data_upward = false
# On the province: standing shares down, as `lienthong share` makes them (repeatable):
# [[sharing.shares]]
# what = "indicators"             # or "reports"
# period = ""                     # "" every period, or e.g. "2026-10"
# indicators = ["KTXH.01"]        # empty: every indicator
# to = ["86-28894", "86-29077"]   # the units it is shared with

[store]
# Below this much free space (MB) on the disk holding the store, the node warns in its
# log and `status` shows a disk problem. A full disk stops writes (nothing is lost:
# children and agency files are taken again once there is room).
min_free_mb = 256

[health]
# `lienthong health` (and the Docker health check) says unhealthy when this node
# has not reached its parent for longer than this many seconds.
max_silence = 600.0

[files]
# Attachments named by records (reports, request answers) are fetched from the node that
# sent the record, in chunks, and checked against the SHA-256 the record was sealed with.
# The largest file taken from another node (MB), and the most taken of one origin node (MB):
# larger ones are refused and shown in `lienthong status`.
max_file_mb = 2048
max_node_mb = 51200

[web]
# The console and its read API (/api/v1/), /metrics and /healthz. Loopback by default;
# another address needs tls_cert and tls_key and at least one account (`lienthong user add`).
# Port 0: the kernel chooses (the node logs it; `lienthong status --json` shows node.web_port).
listen = "127.0.0.1:8080"
tls_cert = ""
tls_key = ""
# A subordinate unit not heard from for this many minutes is shown as silent.
silence_minutes = 60

[sink.postgres]
# Stream the read tables (docs/analytics.md) into PostgreSQL, continuously, for dashboards.
# dsn: a libpq connection string or URL WITHOUT the password ('' = no sink), e.g.
#   "host=db.ioc.example port=5432 dbname=ioc user=lienthong"
# The password: password_file (a file holding it) or password_env (an environment variable's
# name); neither = libpq's own PGPASSWORD or ~/.pgpass.
dsn = ""
password_file = ""
password_env = ""
# Change-log entries carried per PostgreSQL transaction.
batch = 50000

[log]
# debug | info | warning | error
level = "info"
# auto: readable on a terminal, JSON otherwise | json | console
format = "auto"

[display]
# Times people read (tables, status) are shown in this zone; stored times stay UTC and
# `--json` keeps them as ISO 8601 with their offset. An IANA name or an offset (+07:00).
timezone = "Asia/Ho_Chi_Minh"
"""


def render(
    *,
    id: str,
    name: str,
    mode: str,
    listen: str,
    parent: str,
    parent_id: str = "",
    units: list[str] | None = None,
    crl: str = "",
    ca_dir: str = "",
    enroll_listen: str = "",
    enroll_address: str = "",
) -> str:
    """The commented configuration file for a new node (validated before it is written)."""

    def q(value: object) -> str:
        return tomlkit.item(value).as_string()

    text = TEMPLATE.format(
        id=q(id),
        name=q(name),
        mode=q(mode),
        listen=q(listen),
        parent=q(parent),
        parent_id=q(parent_id),
        units=q(list(units or [])),
        crl=q(crl),
        ca_dir=q(ca_dir),
        enroll_listen=q(enroll_listen),
        enroll_address=q(enroll_address),
    )
    validate(tomllib.loads(text))
    return text
