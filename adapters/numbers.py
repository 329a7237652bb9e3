"""Numbers as agencies write them, turned into canonical decimal text (never through float).

Vietnamese locale (Excel in vi-VN, most provincial exports): `.` groups thousands and
`,` is the decimal comma. `12.450,75` → 12450.75, `1.283` → 1283, `97,4` → 97.4,
`1 234,5` → 1234.5 (space or no-break space groups too), `-3,5` → -3.5.

A number that would be read differently in another locale is refused as ambiguous
rather than guessed: `1,234.5` (English grouping), `1.234.5`, `12.45` (a `.` that
is not followed by groups of exactly three digits), `1,234,567`.

Plain locale (DHIS2, canonical files, English headers): `.` is the decimal point and
nothing groups: `12450.75`, `-3`, `1.5E3`. A `,` in such a file is ambiguous.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation

from lienthong.sync.errors import LienthongError

_GROUP_SPACES = "\u0020\u00a0\u202f\u2009"
_UNGROUP = {ord("."): None, **{ord(c): None for c in _GROUP_SPACES}, ord(","): "."}
_VN_FORMS = [
    re.compile(r"\d+(?:,\d+)?"),  # 42, 97,4, 12450,75
    re.compile(r"[1-9]\d{0,2}(?:\.\d{3})+(?:,\d+)?"),  # 1.283, 12.450,75
    re.compile(r"[1-9]\d{0,2}(?:[\u0020\u00a0\u202f\u2009]\d{3})+(?:,\d+)?"),  # 1 234,5
]
_PLAIN = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,2})?")
_NUMBERISH = re.compile(r"[\d.,\u0020\u00a0\u202f\u2009]*\d[\d.,\u0020\u00a0\u202f\u2009]*")


class NumberError(LienthongError, ValueError):
    """Not a number (`bad_value`) or a number that reads two ways (`ambiguous_number`).

    Also a ValueError, as it always was, for callers that catch that."""

    def __init__(self, code: str, value: str, detail_vi: str = "", detail_en: str = "") -> None:
        super().__init__(
            f"{value!r} is not a number" + (f": {detail_en}" if detail_en else ""),
            "write it in digits: 12.450,75 in a Vietnamese file, 12450.75 in any other",
        )
        self.code = code
        self.value = value
        self.detail_vi = detail_vi
        self.detail_en = detail_en


def _split_sign(text: str) -> tuple[str, str]:
    text = unicodedata.normalize("NFC", text).strip().replace("\u2212", "-")
    if text[:1] in "+-" and text[:1]:
        return ("-" if text[0] == "-" else ""), text[1:].strip()
    return "", text


def _canonical(sign: str, digits: str) -> str:
    try:
        number = Decimal(sign + digits)
    except InvalidOperation:
        raise NumberError("bad_value", sign + digits) from None
    if not number.is_finite():
        raise NumberError("bad_value", sign + digits)
    return sign + digits  # the record builder normalises it (12.000 -> 12), still without float


def parse_vietnamese(text: str) -> str:
    """Canonical decimal text for a number written the Vietnamese way; NumberError otherwise."""
    sign, body = _split_sign(text)
    for form in _VN_FORMS:
        if form.fullmatch(body):
            digits = body.translate(_UNGROUP)
            return _canonical(sign, digits)
    if _NUMBERISH.fullmatch(body):
        raise NumberError(
            "ambiguous_number",
            text.strip(),
            "tệp này viết số theo kiểu Việt Nam (dấu chấm ngăn cách hàng nghìn, dấu phẩy trước phần thập phân) nên không biết số này là bao nhiêu.",
            "this file writes numbers the Vietnamese way ('.' groups thousands, ',' is the decimal comma), so this one could mean two different values.",
        )
    raise NumberError("bad_value", text.strip())


def parse_plain(text: str) -> str:
    """Canonical decimal text for a number with a '.' decimal point and no grouping."""
    sign, body = _split_sign(text)
    if _PLAIN.fullmatch(body):
        return _canonical(sign, body)
    if "," in body and _NUMBERISH.fullmatch(body):
        raise NumberError(
            "ambiguous_number",
            text.strip(),
            "tệp này dùng dấu chấm trước phần thập phân và không ngăn cách hàng nghìn, nên dấu phẩy trong số làm số có thể hiểu theo hai cách.",
            "this file uses '.' as the decimal point and no grouping, so a ',' makes the number readable two ways.",
        )
    raise NumberError("bad_value", text.strip())


def format_vietnamese(number: Decimal, *, group: bool = True) -> str:
    """Write `number` the Vietnamese way (for tests and exports): 12450.75 -> '12.450,75'."""
    sign = "-" if number < 0 else ""
    text = format(abs(number), "f")
    whole, _, frac = text.partition(".")
    if group:
        whole = f"{int(whole):,}".replace(",", ".")
    return sign + whole + ("," + frac if frac else "")
