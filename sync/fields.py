"""Field checks: what every record builder asks of an agency's fields (text, codes, periods,
numbers, date-times), each failure an `InputError` naming the field, with a code a receipt
shows and what to write instead. All text is keyed in NFC.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import InputError

CODE = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
# Canonical periods: year, half-year, quarter, month, ISO week, day.
PERIOD = re.compile(r"^\d{4}(S[12]|Q[1-4]|-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?|W(0[1-9]|[1-4]\d|5[0-3]))?$")


def nfc(text: str) -> str:
    """Vietnamese text arrives in NFC and NFD; everything is keyed in NFC."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)  # ASCII is always NFC: skip the call


def text(fields: Mapping[str, Any], name: str, *, required: bool = True, limit: int = 10_000) -> str:
    value = fields.get(name)
    if value is None or value == "":
        if required:
            raise InputError(f"'{name}' is required", f"add a non-empty '{name}'", field=name, code="missing")
        return ""
    if not isinstance(value, str):
        raise InputError(f"'{name}' must be text (got {value!r})", f"write '{name}' as a JSON string", field=name)
    value = nfc(value.strip())
    if len(value) > limit:
        raise InputError(f"'{name}' is longer than {limit} characters", "shorten it", field=name, code="too_long")
    return value


def code(fields: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    value = text(fields, name, required=required, limit=128)
    if value and not CODE.match(value):
        raise InputError(f"'{name}' is not a valid code (got {value!r})", "use a code without control characters", field=name)
    return value


def period(fields: Mapping[str, Any], name: str = "period") -> str:
    value = text(fields, name, limit=16)
    if not PERIOD.match(value):
        raise InputError(
            f"'{name}' is not a period (got {value!r})",
            "write it as 2026, 2026S1, 2026Q3, 2026-10, 2026W05 or 2026-10-24",
            field=name,
            code="bad_period",
        )
    return value


def finite_decimal(value: object, name: str, hint: str) -> Decimal:
    """`value` (a number, or its text) as a finite Decimal; else an InputError on field `name`,
    `hint` saying how to write it."""
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise InputError(f"'{name}' is not a number (got {value!r})", hint, field=name, code="bad_value") from None
    if not number.is_finite():
        raise InputError(f"'{name}' must be finite (got {value!r})", "write a finite number", field=name, code="bad_value")
    return number


def decimal_text(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name)
    if isinstance(value, bool) or value is None or value == "":
        raise InputError(f"'{name}' must be a number", f"write '{name}' as a JSON number", field=name, code="bad_value")
    number = finite_decimal(value, name, "write it with a '.' decimal point and no separators")
    return format(number.normalize(), "f") if number == number.to_integral() else str(number)


def timestamp(fields: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    from datetime import datetime

    value = text(fields, name, required=required, limit=64)
    if not value:
        return ""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(
            f"'{name}' is not a date-time (got {value!r})", "write it as 2026-10-24T16:20:00+07:00", field=name, code="bad_time"
        ) from None
    if parsed.tzinfo is None:
        raise InputError(f"'{name}' has no UTC offset (got {value!r})", "add the offset, e.g. +07:00", field=name, code="bad_time")
    return value
