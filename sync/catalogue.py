"""The indicator catalogue: the province's `indicator` definitions, read as rules.

An indicator definition (`kind: definition`, `type: indicator`) carries in its fields:

    name, measure        what it counts and in which unit of measurement ("triệu đồng", "%")
    period_type          yearly, sixmonthly, quarterly, monthly, weekly or daily
    aggregation          how values roll up the unit hierarchy: sum, avg, weighted_avg,
                         min, max, none, or derived
    weight               weighted_avg: the code of the indicator whose value weighs each unit
    numerator,           derived: indicator codes, several joined by '+'; the value is
    denominator          numerator / denominator x factor, computed at every level from the
                         rolled-up numerator and denominator, never reported
    factor               derived: a number (100 for a percentage; default 1)
    decimals             how many decimals a computed value keeps (avg, weighted_avg,
                         derived; default 2); sums, minima and maxima stay exact

Versions. The catalogue version of an indicator is the version (hybrid logical clock)
of its definition record. When the province changes a definition, the new version
replaces the old one at every node as it arrives (same record id), and a node always
uses the newest version it holds, for every period, past ones included (as DHIS2 applies
an indicator's current formula to every period); results name the version they used.
If two origins define the same code (a node moved under a new province), the newer
version wins.

Read-only and derived from stored definitions: every node holding the same definitions
builds the same catalogue.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from . import records
from .errors import InputError
from .fields import finite_decimal

INDICATOR_DEFINITION = "indicator"
AGGREGATIONS = ("sum", "avg", "weighted_avg", "min", "max", "none", "derived")
COMPUTED = frozenset({"avg", "weighted_avg", "derived"})  # rules whose results are rounded to `decimals`
DEFAULT_DECIMALS = 2
PERIOD_TYPES = ("yearly", "sixmonthly", "quarterly", "monthly", "weekly", "daily")
PERIOD_TYPE_VI = {"yearly": "năm", "sixmonthly": "6 tháng", "quarterly": "quý", "monthly": "tháng", "weekly": "tuần", "daily": "ngày"}

# Spellings people use, folded (no accents, lower case, '_'/'-' as spaces) -> canonical.
_AGGREGATION_SPELLINGS = {
    "sum": "sum",
    "tong": "sum",
    "cong": "sum",
    "avg": "avg",
    "average": "avg",
    "mean": "avg",
    "trung binh": "avg",
    "weighted avg": "weighted_avg",
    "weighted average": "weighted_avg",
    "wavg": "weighted_avg",
    "trung binh co trong so": "weighted_avg",
    "min": "min",
    "minimum": "min",
    "nho nhat": "min",
    "max": "max",
    "maximum": "max",
    "lon nhat": "max",
    "none": "none",
    "khong": "none",
    "khong tong hop": "none",
    "derived": "derived",
    "ratio": "derived",
    "formula": "derived",
    "ti le": "derived",
    "ty le": "derived",
}
_PERIOD_TYPE_SPELLINGS = {
    **{name: name for name in PERIOD_TYPES},
    "year": "yearly",
    "annual": "yearly",
    "annually": "yearly",
    "nam": "yearly",
    "six monthly": "sixmonthly",
    "half yearly": "sixmonthly",
    "halfyearly": "sixmonthly",
    "6 thang": "sixmonthly",
    "quarter": "quarterly",
    "quy": "quarterly",
    "month": "monthly",
    "thang": "monthly",
    "week": "weekly",
    "tuan": "weekly",
    "day": "daily",
    "ngay": "daily",
}


def fold(text: str) -> str:
    """Accent-, case- and separator-insensitive form: 'Trung bình_có trọng số' -> 'trung binh co trong so'."""
    decomposed = unicodedata.normalize("NFD", text.replace("_", " ").replace("-", " "))
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).replace("đ", "d").replace("Đ", "D")
    return " ".join(stripped.casefold().split())


# ---------------------------------------------------------------- periods


def period_type_of(period: str) -> str:
    """The period type of a canonical period: '2026-10' -> 'monthly', '2026Q3' -> 'quarterly'."""
    if len(period) == 4:
        return "yearly"
    if "S" in period:
        return "sixmonthly"
    if "Q" in period:
        return "quarterly"
    if "W" in period:
        return "weekly"
    return "daily" if len(period) == 10 else "monthly"


def period_bounds(period: str) -> tuple[date, date]:
    """First and last day of a canonical period (both inclusive)."""
    year = int(period[:4])
    kind = period_type_of(period)
    if kind == "yearly":
        return date(year, 1, 1), date(year, 12, 31)
    if kind == "sixmonthly":
        half = int(period[5])
        return (date(year, 1, 1), date(year, 6, 30)) if half == 1 else (date(year, 7, 1), date(year, 12, 31))
    if kind == "quarterly":
        first = (int(period[5]) - 1) * 3 + 1
        return date(year, first, 1), _month_end(year, first + 2)
    if kind == "weekly":
        start = date.fromisocalendar(year, int(period[5:]), 1)
        return start, start + timedelta(days=6)
    if kind == "daily":
        day = date.fromisoformat(period)
        return day, day
    month = int(period[5:7])
    return date(year, month, 1), _month_end(year, month)


def _month_end(year: int, month: int) -> date:
    return (date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)) - timedelta(days=1)


def dhis2_period(period: str) -> str:
    """The DHIS2 period id of a canonical period: 2026-10 -> 202610, 2026W05 -> 2026W5, 2026-10-24 -> 20261024."""
    kind = period_type_of(period)
    if kind == "monthly":
        return period.replace("-", "")
    if kind == "daily":
        return period.replace("-", "")
    if kind == "weekly":
        return f"{period[:4]}W{int(period[5:])}"
    return period  # 2026, 2026S1, 2026Q3 are written the same way


# ---------------------------------------------------------------- one indicator


@dataclass(frozen=True)
class Indicator:
    """One indicator of the catalogue, as its newest definition says."""

    code: str
    name: str = ""
    measure: str = ""
    period_type: str = ""
    aggregation: str = "sum"
    weight: str = ""
    numerator: tuple[str, ...] = ()
    denominator: tuple[str, ...] = ()
    factor: Decimal = Decimal(1)
    decimals: int = DEFAULT_DECIMALS
    version: int = 0
    origin: str = ""

    @property
    def derived(self) -> bool:
        return self.aggregation == "derived"


def _codes(value: object) -> tuple[str, ...]:
    """'A + B' or ['A', 'B'] -> ('A', 'B')."""
    items = value if isinstance(value, list | tuple) else str(value or "").split("+")
    return tuple(records.nfc(str(item).strip()) for item in items if str(item).strip())


def _choice(value: object, spellings: Mapping[str, str], field_: str, allowed: Iterable[str]) -> str:
    folded = fold(str(value or ""))
    if folded in spellings:
        return spellings[folded]
    raise InputError(
        f"'{field_}' must be one of {', '.join(allowed)} (got {value!r})",
        f"write one of {', '.join(allowed)}",
        field=field_,
        code="invalid",
    )


def period_type(value: object) -> str:
    """The canonical period type for a spelling ('Tháng', 'monthly', 'quarter'); InputError otherwise."""
    return _choice(value, _PERIOD_TYPE_SPELLINGS, "period_type", PERIOD_TYPES)


def indicator_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Check and normalise an indicator definition's fields (what the province writes).

    Raises InputError naming the field. An empty aggregation with a numerator means derived.
    """

    def text(name: str) -> str:
        return records.nfc(str(fields.get(name) or "").strip())

    out: dict[str, Any] = {"name": text("name"), "measure": text("measure")}
    if not out["name"]:
        raise InputError("'name' is required", "give the indicator's name", field="name", code="missing")
    out["period_type"] = period_type(fields.get("period_type"))
    aggregation = fields.get("aggregation") or ("derived" if text("numerator") else "")
    out["aggregation"] = _choice(aggregation, _AGGREGATION_SPELLINGS, "aggregation", AGGREGATIONS)
    if out["aggregation"] == "weighted_avg":
        if not text("weight"):
            raise InputError(
                "a weighted average needs 'weight'", "name the indicator whose values weigh each unit", field="weight", code="missing"
            )
        out["weight"] = text("weight")
    if out["aggregation"] == "derived":
        for name in ("numerator", "denominator"):
            if not _codes(fields.get(name)):
                raise InputError(
                    f"a derived indicator needs '{name}'", "give indicator codes, several joined by '+'", field=name, code="missing"
                )
            out[name] = "+".join(_codes(fields.get(name)))
        out["factor"] = _number(fields.get("factor"), "factor", Decimal(1))
    if fields.get("decimals") not in (None, ""):
        decimals = _number(fields.get("decimals"), "decimals", Decimal(DEFAULT_DECIMALS))
        if decimals != decimals.to_integral() or not 0 <= decimals <= 10:
            raise InputError(
                f"'decimals' must be a whole number from 0 to 10 (got {fields.get('decimals')!r})", "write e.g. 2", field="decimals"
            )
        out["decimals"] = int(decimals)
    return out


def _number(value: object, field_: str, default: Decimal) -> Decimal:
    if value is None or value == "":
        return default
    return finite_decimal(value, field_, "write it in digits, e.g. 100")


def indicator_from(code: str, fields: Mapping[str, Any], version: int = 0, origin: str = "") -> Indicator:
    """An Indicator from stored definition fields (InputError if they are not usable)."""
    checked = indicator_fields(fields)
    factor = checked.get("factor", Decimal(1))
    return Indicator(
        code=records.nfc(code),
        name=checked["name"],
        measure=checked["measure"],
        period_type=checked["period_type"],
        aggregation=checked["aggregation"],
        weight=checked.get("weight", ""),
        numerator=_codes(checked.get("numerator")),
        denominator=_codes(checked.get("denominator")),
        factor=factor if isinstance(factor, Decimal) else Decimal(str(factor)),
        decimals=int(checked.get("decimals", DEFAULT_DECIMALS)),
        version=version,
        origin=origin,
    )


# ---------------------------------------------------------------- the catalogue


@dataclass(frozen=True)
class Refusal:
    """Why a value cannot be taken against the catalogue: a code and two sentences."""

    code: str
    message_vi: str
    message_en: str


@dataclass
class Catalogue:
    """The indicators a node holds, newest definition of each code; and the definitions it could not use."""

    indicators: dict[str, Indicator] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # code -> why its definition is not used

    @classmethod
    def from_store(cls, store: Any) -> Catalogue:
        """Read every `indicator` definition of a `Store` (tombstones excluded)."""
        return cls.from_envelopes(store.iter_records(records.DEFINITION))

    @classmethod
    def from_envelopes(cls, envelopes: Iterable[records.Envelope]) -> Catalogue:
        newest: dict[str, tuple[int, str, dict[str, Any]]] = {}
        for env in envelopes:
            if env.kind != records.DEFINITION or env.deleted:
                continue
            body = records.body_of(env)
            if body.type != INDICATOR_DEFINITION:
                continue
            code = records.nfc(body.code)
            key = (env.version, env.origin)
            if code not in newest or key > newest[code][:2]:
                newest[code] = (env.version, env.origin, json.loads(body.json or "{}"))
        catalogue = cls()
        for code, (version, origin, fields) in sorted(newest.items()):
            try:
                catalogue.indicators[code] = indicator_from(code, fields, version, origin)
            except InputError as exc:
                catalogue.problems[code] = exc.message
        catalogue._check_references()
        return catalogue

    def _check_references(self) -> None:
        """A derived indicator whose terms are unknown or derived, or a weighted average without its weight, is set aside."""
        for code, ind in list(self.indicators.items()):
            terms = [*ind.numerator, *ind.denominator]
            unknown = [t for t in terms if t not in self.indicators]
            nested = [t for t in terms if t in self.indicators and self.indicators[t].derived]
            if unknown or nested:
                why = (
                    f"its terms {', '.join(unknown)} are not in the catalogue"
                    if unknown
                    else f"its terms {', '.join(nested)} are derived too"
                )
                self.problems[code] = why
                del self.indicators[code]
            elif ind.aggregation == "weighted_avg" and ind.weight not in self.indicators:
                self.problems[code] = f"its weight {ind.weight} is not in the catalogue"
                del self.indicators[code]

    def __contains__(self, code: object) -> bool:
        return code in self.indicators

    def __iter__(self) -> Iterator[Indicator]:
        return iter(self.indicators[c] for c in sorted(self.indicators))

    def __len__(self) -> int:
        return len(self.indicators)

    def get(self, code: str) -> Indicator | None:
        return self.indicators.get(code)

    @property
    def version(self) -> int:
        """The newest definition version in the catalogue (0 when empty)."""
        return max((i.version for i in self.indicators.values()), default=0)

    def check_value(self, code: str, period: str) -> Refusal | None:
        """Why a reported value of `code` for `period` must be refused, or None.

        A derived indicator is computed, never reported; a value must be for a period of
        the indicator's period type. (Unknown codes are the intake's own check.)
        """
        ind = self.indicators.get(code)
        if ind is None:
            return None
        if ind.derived:
            terms = " / ".join("+".join(t) for t in (ind.numerator, ind.denominator))
            return Refusal(
                "derived_indicator",
                f"Chỉ tiêu {code} được tính tự động ({terms}), không nhập số liệu; hãy gửi số liệu của tử số và mẫu số.",
                f"Indicator {code} is computed ({terms}) and never reported; send its numerator and denominator instead.",
            )
        actual = period_type_of(period)
        if ind.period_type and actual != ind.period_type:
            return Refusal(
                "wrong_period_type",
                f"Chỉ tiêu {code} báo cáo theo kỳ {PERIOD_TYPE_VI[ind.period_type]}, nhưng {period} là kỳ {PERIOD_TYPE_VI[actual]}; "
                "hãy ghi đúng kỳ báo cáo.",
                f"Indicator {code} is reported {ind.period_type}, but {period} is a {actual} period; write the right period.",
            )
        return None
