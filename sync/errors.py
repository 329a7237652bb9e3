"""The one exception tree of lienthong: every error a user can see is in it.

    LienthongError            every expected failure; carries `message` and a `hint` for the operator
    ├── ConfigError           lienthong.toml is missing or has a bad value (names the field path)
    ├── InputError            a record or input line is not acceptable (`field`, `code`)
    ├── StoreError            the node's database cannot be used
    │   └── SchemaTooNew      the database was written by a newer lienthong
    ├── TrustError            certificates, keys or identities do not check out
    │   └── EnrollError       enrollment failed or was refused (node/trust/tokens.py)
    ├── ReplicationError      a replication session cannot go on
    │   ├── HandshakeRefused  the peer refused us (or we refused it) at the handshake
    │   ├── ProtocolError     the peer broke the protocol; the session is dropped
    │   └── EpochChanged      this node's change log was restored; resync from the start
    ├── ApprovalLocked        a change to data its unit approved, refused until it is un-approved (sync/approval.py)
    ├── AuditError            the audit log cannot be used, or was asked something malformed (node/trust/audit_chain.py)
    ├── BackupError           a backup or a restore could not be made (node/backup.py)
    ├── AccountError          a console account cannot be made or used (node/web/accounts.py)
    ├── ApiError              a request the console's read API refuses: HTTP `status` and `code` (node/web/api.py)
    ├── UnknownAdapter        no installed adapter has that name (`name`, `installed`; adapters/registry.py), also a LookupError
    ├── FileRefused           an agency's file cannot be read at all (`code`, `message_vi`, `message_en`; adapters/base.py)
    ├── PeriodError           not a reporting period (`value`, `reason_vi`, `reason_en`; adapters/periods.py), also a ValueError
    ├── NumberError           not a number, or one that reads two ways (`code`, `value`, `detail_vi`, `detail_en`;
    │                         adapters/numbers.py), also a ValueError
    ├── FileChanged           an inbox file changed while it was read; it is read again later (adapters/held.py)
    ├── ChildFailed           the process parsing a large file failed or ended early (adapters/parse_child.py)
    ├── LinkRefused           an inbox name is a symbolic link, never followed (adapters/held.py), also an OSError
    ├── NotRegularFile        an inbox name is a folder, pipe or device (adapters/held.py), also an OSError
    └── BadName               an attachment named with a folder or `..` (adapters/held.py), also a ValueError

Where they live: `LienthongError` and `ConfigError` are defined in `lienthong.config.errors`,
because `config/` may import nothing of the project, and are re-exported here; import them
from here. The classes defined here belong to the core; an error that belongs to one part of
the shell or of the adapters is defined beside the code that raises it (the path after its
line above) and derives from a class of this tree. `FileRefused`, `PeriodError` and
`NumberError` are not `InputError`s on purpose: the adapters catch `InputError` per row, and
a refusal of the whole file, or a period or number error that the row turns into its own
receipt sentence, must never be caught as a record builder's complaint.

The CLI prints `Error: <message>` and `Try: <hint>` for these, never a traceback;
the gRPC servicer maps them to status codes. Anything else is a bug.
"""

from __future__ import annotations

from lienthong.config.errors import ConfigError, LienthongError

__all__ = [
    "ConfigError",
    "EpochChanged",
    "HandshakeRefused",
    "InputError",
    "LienthongError",
    "ProtocolError",
    "ReplicationError",
    "SchemaTooNew",
    "StoreError",
    "TrustError",
]


class InputError(LienthongError):
    """A record or input line is not acceptable; `field` names what is wrong."""

    def __init__(self, message: str, hint: str = "", *, field: str = "", code: str = "invalid") -> None:
        super().__init__(message, hint)
        self.field = field
        self.code = code


class StoreError(LienthongError):
    """The node's database cannot be opened or used."""


class SchemaTooNew(StoreError):
    """The database was written by a newer version of lienthong."""


class TrustError(LienthongError):
    """Certificates, keys or identities do not check out."""


class ReplicationError(LienthongError):
    """A replication session cannot go on; the link reconnects with backoff."""


class HandshakeRefused(ReplicationError):
    """The handshake was refused by one side; retrying will not help until fixed."""


class ProtocolError(ReplicationError):
    """The peer sent something the protocol does not allow."""


class EpochChanged(ReplicationError):
    """This node's change log no longer matches what the parent holds (restored
    from a backup); a new epoch was minted and everything is sent again."""

    def __init__(self, message: str, hint: str = "nothing to do: the node sends everything again by itself") -> None:
        super().__init__(message, hint)
