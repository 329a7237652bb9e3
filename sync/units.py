"""The administrative unit registry, as the province's `unit` definitions describe it.

A unit definition's fields: `name`, `level` (province, commune, ward, agency, … — any
number of tiers; nothing here assumes two), `parent` (a unit code, empty at the top),
and optionally `valid_from` / `valid_to` (ISO dates, inclusive / exclusive) and
`successor` (the unit it was merged into on `valid_to`). A unit is *active* on a day
when valid_from <= day < valid_to (either bound may be absent).

Everything here is read-only and derived from the stored definitions, so every node
that holds the same definitions builds the same registry.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date

from . import records
from .errors import InputError
from .records import Envelope, RecordReader


@dataclass(frozen=True)
class Unit:
    code: str
    name: str
    level: str
    parent: str
    valid_from: date | None = None
    valid_to: date | None = None
    successor: str = ""

    def active_on(self, day: date) -> bool:
        return (self.valid_from is None or self.valid_from <= day) and (self.valid_to is None or day < self.valid_to)

    def active_during(self, start: date, end: date) -> bool:
        """Active on at least one day of [start, end] (both inclusive)."""
        return (self.valid_from is None or self.valid_from <= end) and (self.valid_to is None or start < self.valid_to)


def _day(text: object, code: str, field: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(str(text))
    except ValueError:
        raise InputError(
            f"unit {code}: {field} {text!r} is not a date (YYYY-MM-DD)", "correct the unit definition at the province and send it again"
        ) from None


class Units:
    """The registry: lookups by code, the hierarchy and the successor chain of merged units."""

    def __init__(self, units: Iterable[Unit]) -> None:
        self._by_code = {u.code: u for u in units}
        self._children: dict[str, list[str]] = {}
        for u in self._by_code.values():
            self._children.setdefault(u.parent, []).append(u.code)
        for kids in self._children.values():
            kids.sort()

    @classmethod
    def from_store(cls, store: RecordReader) -> Units:
        """The registry as a store holds it (committed definitions)."""
        return cls.from_envelopes(store.iter_records(records.DEFINITION))

    @classmethod
    def load(cls, db: sqlite3.Connection) -> Units:
        """The registry as `db` sees it: on the writer's connection, inside its transaction,
        units defined in that same transaction are included."""
        rows = db.execute("SELECT envelope FROM records WHERE kind = ? AND deleted = 0 ORDER BY rid", (records.DEFINITION,))
        return cls.from_envelopes(Envelope.FromString(raw) for (raw,) in rows)

    @classmethod
    def from_envelopes(cls, definitions: Iterable[Envelope]) -> Units:
        """The registry from definition envelopes (other definition types are skipped)."""
        out = []
        for env in definitions:
            body = records.body_of(env)
            if body.type != "unit":
                continue
            try:
                fields = json.loads(body.json or "{}")
            except json.JSONDecodeError:
                raise InputError(
                    f"unit {body.code}: its definition is not valid JSON", "correct the unit definition at the province and send it again"
                ) from None
            out.append(
                Unit(
                    code=records.nfc(body.code),
                    name=str(fields.get("name", "")),
                    level=str(fields.get("level", "")),
                    parent=records.nfc(str(fields.get("parent", "") or "")),
                    valid_from=_day(fields.get("valid_from"), body.code, "valid_from"),
                    valid_to=_day(fields.get("valid_to"), body.code, "valid_to"),
                    successor=records.nfc(str(fields.get("successor", "") or "")),
                )
            )
        return cls(out)

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def __iter__(self) -> Iterator[Unit]:
        return iter(sorted(self._by_code.values(), key=lambda u: u.code))

    def __len__(self) -> int:
        return len(self._by_code)

    def get(self, code: str) -> Unit | None:
        return self._by_code.get(code)

    def children(self, code: str) -> list[str]:
        return list(self._children.get(code, []))

    def ancestors(self, code: str) -> list[str]:
        """Parent, grandparent, … up to the top (cycles in bad data are cut)."""
        out: list[str] = []
        unit = self._by_code.get(code)
        while unit and unit.parent and unit.parent not in out and unit.parent != code:
            out.append(unit.parent)
            unit = self._by_code.get(unit.parent)
        return out

    def descendants(self, code: str) -> list[str]:
        """Every unit below `code`, depth first, sorted within each level."""
        out: list[str] = []
        stack = list(reversed(self._children.get(code, [])))
        while stack:
            current = stack.pop()
            if current in out:
                continue
            out.append(current)
            stack.extend(reversed(self._children.get(current, [])))
        return out

    def successor(self, code: str, on: date) -> str:
        """The unit that answers for `code` on day `on`: `code` itself while it is active,
        else the end of its successor chain (X merged into Y, Y later into Z → Z)."""
        seen = {code}
        unit = self._by_code.get(code)
        while unit and unit.successor and not unit.active_on(on) and unit.successor not in seen:
            seen.add(unit.successor)
            code = unit.successor
            unit = self._by_code.get(code)
        return code
