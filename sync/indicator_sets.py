"""Indicator sets (Bộ chỉ số): which indicators a unit of each level owes, per period, by which day,
and how complete and timely each unit's set is, as DHIS2 computes data-set completeness.

The province sends them down as `indicator_set` definitions, one per set and level (code
`BCS-KTXH@commune`), with the fields `name`, `indicators` (a list of indicator codes, or one
text with the codes separated by `,` or `;`), `period_type`, `level` and `due` (a due rule as
report schedules read it, `schedule.parse_due`). The set's data-set code is the code before
`@` (or the field `dataset`).

For a period, every unit of the set's level active during the period and on its due day owes
one value of each indicator (any disaggregation counts). Each expected (unit, set) is

    on_time     every indicator present, the last one witnessed on or before the due day
    late        every indicator present, the last one witnessed after the due day
    incomplete  some indicators present, the due day passed (the missing ones are named)
    missing     none present and the due day passed
    pending     not all present, not yet due

A value's time is the time a node witnessed it (`completeness.witnessed_at`): the origin's
first version, bounded by when this node received it. So

    completeness = (on time + late) / expected      timeliness = on time / expected

and, value by value, `values_present / values_expected`.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from . import records
from .completeness import APPROVED_STATES, Rates, witnessed_at
from .errors import LienthongError
from .schedule import VIETNAM, DefinitionReader, DueRule, bounds, parse_due, period_type
from .units import Unit, Units

SET_DEFINITION = "indicator_set"
INCOMPLETE = "incomplete"
_SEPARATORS = re.compile(r"[,;\n]")


@dataclass(frozen=True)
class IndicatorSet:
    """One indicator set as owed by the units of one level."""

    code: str
    dataset: str
    name: str
    indicators: tuple[str, ...]
    period_type: str
    level: str
    rule: DueRule
    version: int = 0

    def due(self, period: str) -> date:
        return self.rule.due(period)

    @classmethod
    def from_definition(cls, code: str, fields: Mapping[str, object], version: int = 0) -> IndicatorSet:
        """Read one `indicator_set` definition; a missing or unreadable field is refused, naming it."""
        read = DefinitionReader("indicator set", code, fields)
        kind = read.period_type()
        raw = fields.get("indicators")
        items = raw if isinstance(raw, list) else _SEPARATORS.split(raw) if isinstance(raw, str) else []
        indicators = tuple(dict.fromkeys(records.nfc(str(i).strip()) for i in items if str(i).strip()))
        if not indicators:
            raise LienthongError(f"indicator set {code!r}: 'indicators' lists no indicator", "list the indicator codes the set holds")
        dataset = read.subject("dataset")
        return cls(
            code=code,
            dataset=dataset,
            name=str(fields.get("name") or dataset),
            indicators=indicators,
            period_type=kind,
            level=read.text("level"),
            rule=parse_due(read.text("due"), kind, f"{code!r} (indicator set)"),
            version=version,
        )


@dataclass(frozen=True)
class IndicatorSets:
    """Every indicator set a node holds, and the definitions that could not be read."""

    items: tuple[IndicatorSet, ...]
    problems: tuple[LienthongError, ...] = ()

    @classmethod
    def from_envelopes(cls, envelopes: Iterable[records.Envelope]) -> IndicatorSets:
        chosen: dict[tuple[str, str], IndicatorSet] = {}
        problems: list[LienthongError] = []
        for env in envelopes:
            body = records.body_of(env)
            if body.type != SET_DEFINITION:
                continue
            try:
                fields = json.loads(body.json or "{}")
                item = IndicatorSet.from_definition(records.nfc(body.code), fields if isinstance(fields, dict) else {}, env.version)
            except (LienthongError, json.JSONDecodeError) as exc:
                problems.append(exc if isinstance(exc, LienthongError) else LienthongError(f"indicator set {body.code!r}: {exc}", ""))
                continue
            key = (item.dataset, item.level)
            if key not in chosen or chosen[key].version < item.version:
                chosen[key] = item
        return cls(tuple(sorted(chosen.values(), key=lambda s: (s.dataset, s.level))), tuple(problems))

    @classmethod
    def load(cls, db: sqlite3.Connection) -> IndicatorSets:
        """From the definitions in a store's connection (cheap: definitions are few)."""
        raws = db.execute(
            "SELECT envelope FROM records WHERE kind = ? AND deleted = 0 AND instr(envelope, ?) > 0",
            (records.DEFINITION, SET_DEFINITION.encode()),
        )
        return cls.from_envelopes(records.Envelope.FromString(raw) for (raw,) in raws)

    def datasets(self) -> set[str]:
        return {s.dataset for s in self.items}

    def containing(self, indicator: str) -> set[str]:
        """The data sets that hold `indicator`."""
        return {s.dataset for s in self.items if indicator in s.indicators}

    def __iter__(self) -> Iterator[IndicatorSet]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class UnitSet:
    """One unit's set for one period, and how it stands."""

    unit: Unit
    item: IndicatorSet
    period: str
    due: date
    status: str
    present: dict[str, datetime]  # indicator -> when it was first witnessed
    approval: str = ""

    @property
    def missing(self) -> list[str]:
        return [i for i in self.item.indicators if i not in self.present]

    def to_dict(self) -> dict[str, Any]:
        last = max(self.present.values()) if self.present else None
        return {
            "unit": self.unit.code,
            "unit_name": self.unit.name,
            "level": self.unit.level,
            "dataset": self.item.dataset,
            "dataset_name": self.item.name,
            "period": self.period,
            "due": self.due.isoformat(),
            "status": self.status,
            "values_expected": len(self.item.indicators),
            "values_present": len(self.present),
            "missing": self.missing,
            "last_witnessed_at": last.astimezone(VIETNAM).isoformat(timespec="seconds") if last else None,
            "approval": self.approval,
        }


@dataclass
class SetRates(Rates):
    incomplete: int = 0
    values_expected: int = 0
    values_present: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["incomplete"] = self.incomplete
        out["values_expected"] = self.values_expected
        out["values_present"] = self.values_present
        out["value_completeness"] = round(100 * self.values_present / self.values_expected, 1) if self.values_expected else None
        return out


@dataclass
class SetCompleteness:
    period: str
    today: date
    units: list[UnitSet] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        levels: dict[tuple[str, str], SetRates] = {}
        for u in self.units:
            rates = levels.setdefault((u.item.dataset, u.unit.level), SetRates())
            rates.add(u.status)
            rates.values_expected += len(u.item.indicators)
            rates.values_present += len(u.present)
        return {
            "period": self.period,
            "as_of": self.today.isoformat(),
            "units": [u.to_dict() for u in self.units],
            "levels": [{"dataset": d, "level": level, **r.to_dict()} for (d, level), r in levels.items()],
        }


def _judge(present: dict[str, datetime], item: IndicatorSet, due: date, today: date) -> str:
    from .completeness import LATE, MISSING, ON_TIME, PENDING

    if len(present) == len(item.indicators):
        return ON_TIME if max(present.values()).astimezone(VIETNAM).date() <= due else LATE
    if today <= due:
        return PENDING
    return INCOMPLETE if present else MISSING


def values_present(db: sqlite3.Connection, period: str, indicators: Iterable[str]) -> dict[tuple[str, str], datetime]:
    """(unit, indicator) -> when a value of it for `period` was first witnessed here (any disaggregation)."""
    out: dict[tuple[str, str], datetime] = {}
    wanted = sorted(set(indicators))
    for (raw,) in db.execute(
        "SELECT r.envelope FROM indicator_values v JOIN records r ON r.id = v.record_id "
        "WHERE v.period = ? AND v.indicator IN (SELECT value FROM json_each(?)) AND r.deleted = 0",
        (period, json.dumps(wanted)),
    ):
        env = records.Envelope.FromString(raw)
        key = (env.unit, records.body_of(env).indicator)
        when = witnessed_at(db, env)[1]
        if key not in out or when < out[key]:
            out[key] = when
    return out


def completeness(
    db: sqlite3.Connection,
    units: Units,
    sets: IndicatorSets,
    period: str,
    *,
    today: date,
    dataset: str | None = None,
    level: str | None = None,
    within: Iterable[str] | None = None,
    approvals: Mapping[tuple[str, str, str], str] | None = None,
    approved_only: bool = False,
) -> SetCompleteness:
    """Judge every indicator set expected for `period` as of `today` (see the module docstring)."""
    kind = period_type(period) if bounds(period) else None
    scope = None if within is None else set(within)
    chosen = [s for s in sets if s.period_type == kind and (not dataset or s.dataset == dataset) and (not level or s.level == level)]
    present = values_present(db, period, (i for s in chosen for i in s.indicators)) if chosen else {}
    start, end = bounds(period)
    result = SetCompleteness(period, today)
    for item in chosen:
        due = item.due(period)
        for unit in units:
            if unit.level != item.level or (scope is not None and unit.code not in scope):
                continue
            if not (unit.active_during(start, end) and unit.active_on(due)):
                continue
            state = (approvals or {}).get((unit.code, item.dataset, period), "")
            have = {i: present[(unit.code, i)] for i in item.indicators if (unit.code, i) in present}
            if approved_only and state not in APPROVED_STATES:
                have = {}
            result.units.append(UnitSet(unit, item, period, due, _judge(have, item, due, today), have, state))
    result.units.sort(key=lambda u: (u.item.dataset, len(units.ancestors(u.unit.code)), u.unit.code))
    return result
