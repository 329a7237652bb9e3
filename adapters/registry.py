"""Finding adapters: the entry-point group `lienthong.adapters`, read lazily and once.

The built-ins are registered through that same group (pyproject.toml), exactly as
a third-party package registers its own. An adapter that fails to load is left
out and reported; it never stops the node.
"""

from __future__ import annotations

import importlib.metadata
import threading
from dataclasses import dataclass
from pathlib import Path

import structlog

from lienthong.sync.errors import LienthongError

from .base import Adapter

GROUP = "lienthong.adapters"
HEAD_BYTES = 4096

log = structlog.get_logger("lienthong.adapters")


class UnknownAdapter(LienthongError, LookupError):
    """No installed adapter has that name; the message lists the installed ones.

    Also a LookupError, as it always was, for callers that catch that."""

    def __init__(self, name: str, installed: list[str]) -> None:
        super().__init__(
            f"no adapter named {name!r}; installed: {', '.join(installed) or 'none'}",
            "use a name from `lienthong adapters list`",
        )
        self.name = name
        self.installed = installed


@dataclass(frozen=True)
class Installed:
    name: str
    version: str
    description: str
    kinds: frozenset[str]
    distribution: str


class Registry:
    """The installed adapters, loaded on first use."""

    def __init__(self, extra: list[Adapter] | None = None) -> None:
        self._extra = list(extra or [])
        self._adapters: dict[str, Adapter] | None = None
        self._broken: dict[str, str] = {}
        self._dists: dict[str, str] = {}
        self._lock = threading.Lock()

    def _load(self) -> dict[str, Adapter]:
        with self._lock:
            if self._adapters is None:
                found: dict[str, Adapter] = {}
                for ep in sorted(importlib.metadata.entry_points(group=GROUP), key=lambda e: e.name):
                    try:
                        adapter = ep.load()()
                        if not isinstance(adapter, Adapter):
                            raise TypeError("it does not implement the Adapter protocol")
                    except Exception as exc:  # a broken plugin must not stop the node
                        self._broken[ep.name] = f"{type(exc).__name__}: {exc}"
                        log.error("adapter.broken", adapter=ep.name, error=self._broken[ep.name])
                        continue
                    found[ep.name] = adapter
                    self._dists[ep.name] = ep.dist.name if ep.dist else ""
                for adapter in self._extra:
                    found[adapter.name] = adapter
                self._adapters = found
            return self._adapters

    def names(self) -> list[str]:
        return sorted(self._load())

    def get(self, name: str) -> Adapter:
        adapters = self._load()
        if name not in adapters:
            raise UnknownAdapter(name, sorted(adapters))
        return adapters[name]

    def installed(self) -> list[Installed]:
        return [Installed(a.name, a.version, a.description, a.kinds, self._dists.get(name, "")) for name, a in sorted(self._load().items())]

    @property
    def broken(self) -> dict[str, str]:
        self._load()
        return dict(self._broken)

    def detect(self, path: Path) -> Adapter | None:
        """The first adapter (by name) that claims the file, or None."""
        try:
            with path.open("rb") as f:
                head = f.read(HEAD_BYTES)
        except OSError:
            return None
        for name in sorted(self._load()):
            adapter = self._load()[name]
            try:
                if adapter.claims(path, head):
                    return adapter
            except Exception as exc:  # claims() must not raise; if it does, skip the adapter
                log.error("adapter.claims_failed", adapter=name, file=path.name, error=str(exc))
        return None
