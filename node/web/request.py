"""What a console request asks and may see: its query parameters checked (`Query`: every bad value
a 400 naming it), the account's scope applied to every query (`Scope`: asking outside it is a
403), and the API's one error (`ApiError`: a status, a stable code, one sentence and a hint)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from lienthong.sync import records
from lienthong.sync.errors import LienthongError
from lienthong.sync.store import Store

from .accounts import Account

MAX_LIMIT = 1000


class ApiError(LienthongError):
    """A request the API refuses: its HTTP status, a stable code, one sentence and a hint."""

    def __init__(self, status: int, code: str, message: str, hint: str = "") -> None:
        super().__init__(message, hint)
        self.status, self.code = status, code

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "hint": self.hint}}


@dataclass(frozen=True)
class Scope:
    """What an account may see: None is everything."""

    units: frozenset[str] | None
    agencies: frozenset[str] | None

    @classmethod
    def of(cls, store: Store, account: Account) -> Scope:
        units = None
        if account.units:
            units = frozenset(code for (code,) in store.reader().execute(SUBTREE, (json.dumps(list(account.units)),)))
        return cls(units, frozenset(account.agencies) if account.agencies else None)

    def check_unit(self, unit: str) -> None:
        if self.units is not None and unit not in self.units:
            raise ApiError(403, "outside_scope", f"unit {unit} is outside this account's scope", "ask for a unit of your own subtree")

    def check_agency(self, agency: str) -> None:
        if self.agencies is not None and agency not in self.agencies:
            raise ApiError(403, "outside_scope", f"agency {agency} is outside this account's scope", "ask for your own agency's data")

    def where(self, unit_columns: tuple[str, ...] = ("unit",), agency_column: str | None = "agency") -> tuple[str, list[Any]]:
        """SQL conditions (joined with AND) and their arguments that keep a query inside the scope."""
        parts, args = [], []
        if self.units is not None:
            marks = " OR ".join(f"{c} IN (SELECT value FROM json_each(?))" for c in unit_columns)
            parts.append(f"({marks})")
            args += [json.dumps(sorted(self.units))] * len(unit_columns)
        if self.agencies is not None:
            if agency_column is None:
                parts.append("0")  # data without an agency: an agency-scoped account sees none of it
            else:
                parts.append(f"{agency_column} IN (SELECT value FROM json_each(?))")
                args.append(json.dumps(sorted(self.agencies)))
        return " AND ".join(parts) or "1", args

    def require_whole_node(self, what: str) -> None:
        if self.units is not None or self.agencies is not None:
            raise ApiError(403, "outside_scope", f"{what} is shown to accounts that see the whole node", "ask an admin of this node")


SUBTREE = """
WITH RECURSIVE sub(code) AS (
    SELECT value FROM json_each(?)
    UNION SELECT u.code FROM units u JOIN sub ON u.parent = sub.code
) SELECT code FROM sub
"""


class Query:
    """A request's query parameters, checked: every bad value is a 400 naming it."""

    def __init__(self, params: Any) -> None:
        self.params = params

    def text(self, name: str, default: str = "") -> str:
        value = str(self.params.get(name, default)).strip()
        if len(value) > 200:
            raise ApiError(400, "bad_parameter", f"{name} is too long", f"give a shorter {name}")
        return records.nfc(value)

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.params.get(name)
        if raw is None or raw == "":
            return default
        if not re.fullmatch(r"\d{1,9}", raw) or not low <= int(raw) <= high:
            raise ApiError(
                400, "bad_parameter", f"{name} must be a whole number from {low} to {high} (got {raw!r})", f"e.g. {name}={default}"
            )
        return int(raw)

    def flag(self, name: str) -> bool:
        raw = self.params.get(name, "").lower()
        if raw not in ("", "true", "false", "1", "0"):
            raise ApiError(400, "bad_parameter", f"{name} must be true or false (got {raw!r})", f"e.g. {name}=true")
        return raw in ("true", "1")

    def period(self, required: bool = False) -> str:
        value = self.text("period")
        if not value:
            if required:
                raise ApiError(400, "missing_parameter", "period is required", "e.g. period=2026-10")
            return ""
        if not records.PERIOD.match(value):
            raise ApiError(
                400,
                "bad_parameter",
                f"period is not a period (got {value!r})",
                "write it as 2026-10, 2026Q3, 2026S1, 2026, a week (2026W05) or a day (2026-10-31)",
            )
        return value

    def page(self) -> tuple[int, int]:
        return self.integer("limit", 100, 1, MAX_LIMIT), self.integer("offset", 0, 0, 10**9)

    def choice(self, name: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name)
        if value and value not in allowed:
            raise ApiError(400, "bad_parameter", f"{name} must be one of {', '.join(allowed)} (got {value!r})", f"e.g. {name}={allowed[0]}")
        return value
