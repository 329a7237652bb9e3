"""What the console's handlers share: the node's store, settings, accounts, sessions and audit log."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from lienthong.config.settings import Settings
from lienthong.sync.store import Store

from ..trust.audit import AuditLog
from ..trust.ratelimit import Guard, RateLimit
from .accounts import Accounts
from .sessions import Sessions


@dataclass
class Console:
    """What the console's handlers share: the node's store, settings, accounts and audit log."""

    node_dir: Path
    settings: Settings
    store: Store
    audit: AuditLog | None
    accounts: Accounts
    sessions: Sessions
    guard: Guard = field(default_factory=lambda: Guard(RateLimit(failures=5, window=300.0, block=300.0, delay=0.5)))
    runtime: dict[str, Any] = field(default_factory=dict)  # the node's live facts (ports, state)

    def audit_append(self, action: str, subject: str, details: dict[str, Any], actor: str) -> None:
        if self.audit is not None:
            self.audit.append(action, subject, details, actor=actor)


CONSOLE: web.AppKey[Console] = web.AppKey("console", Console)
