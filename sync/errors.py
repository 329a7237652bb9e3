"""The one exception tree of lienthong's core.

    LienthongError            every expected failure; carries a hint for the operator
    ├── InputError            a record or input line is not acceptable
    ├── StoreError            the node's database cannot be used
    │   └── SchemaTooNew      the database was written by a newer lienthong
    ├── TrustError            certificates, keys or identities do not check out
    └── ReplicationError      a replication session cannot go on
        ├── HandshakeRefused  the peer refused us (or we refused it) at the handshake
        ├── ProtocolError     the peer broke the protocol; the session is dropped
        └── EpochChanged      this node's change log was restored; resync from the start

The CLI prints `Error: <message>` and `Try: <hint>` for these, never a traceback;
the gRPC servicer maps them to status codes. Anything else is a bug.
"""

from __future__ import annotations


class LienthongError(Exception):
    """An expected failure, told to the operator in one sentence and a hint."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


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
