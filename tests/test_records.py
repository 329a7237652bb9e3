"""Records: deterministic identity from natural keys, NFC everywhere, clear refusals."""

from __future__ import annotations

import unicodedata

import pytest

from lienthong.sync import records
from lienthong.sync.errors import InputError

INDICATOR = {"kind": "indicator", "indicator": "KTXH.NS.01", "unit": "86-28894", "period": "2026-10", "value": "12450.75"}


def test_same_natural_key_gives_same_id_and_other_keys_differ() -> None:
    """Re-ingesting the same fact yields the same id; another period, origin or agency is another record."""
    a = records.build("86-28894", INDICATOR)
    assert records.build("86-28894", dict(INDICATOR, value="1")).id == a.id
    assert records.build("86-28894", dict(INDICATOR, period="2026-09")).id != a.id
    assert records.build("86-29077", INDICATOR).id != a.id  # origin is part of the key (single writer)
    assert records.build("86-28894", dict(INDICATOR, agency="soyte")).id != a.id


def test_nfd_text_lands_on_the_same_record_as_nfc() -> None:
    """Vietnamese in NFD (macOS) and NFC (Windows) must not split one unit into two."""
    nfc = dict(INDICATOR, unit="Xã Ba Tri")
    nfd = dict(INDICATOR, unit=unicodedata.normalize("NFD", "Xã Ba Tri"))
    assert nfd["unit"] != nfc["unit"]
    a, b = records.build("n", nfc), records.build("n", nfd)
    assert a.id == b.id and a.unit == b.unit == "Xã Ba Tri"


def test_values_keep_their_decimal_digits() -> None:
    """A value is stored as decimal text, never through a binary float."""
    env = records.build("n", dict(INDICATOR, value="0.1")).envelope("n", 1)
    assert records.body_of(env).value == "0.1"
    assert records.to_dict(env)["value"] == 0.1


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"period": "Tháng 13/2026"}, "period", "bad_period"),
        ({"period": "2026-13"}, "period", "bad_period"),
        ({"value": "mười hai"}, "value", "bad_value"),
        ({"value": None}, "value", "bad_value"),
        ({"unit": ""}, "unit", "missing"),
        ({"kind": "weather"}, "kind", "bad_kind"),
    ],
)
def test_bad_fields_are_refused_with_field_and_code(change: dict[str, object], field: str, code: str) -> None:
    """Each bad field is named, with a machine code and a hint, so the sender can fix it."""
    with pytest.raises(InputError) as err:
        records.build("n", {**INDICATOR, **change})
    assert err.value.field == field and err.value.code == code and err.value.hint


def test_feedback_event_status_must_be_known() -> None:
    """Feedback events use the lifecycle's statuses only."""
    event = {"kind": "feedback_event", "feedback": "1022-1", "status": "done", "at": "2026-11-20T07:42:10+07:00", "unit": "86-28894"}
    with pytest.raises(InputError, match="not a feedback status"):
        records.build("86", event)
    assert records.build("86", dict(event, status="In progress")).kind == records.FEEDBACK_EVENT


def test_to_dict_carries_canonical_fields_and_origin() -> None:
    """Query output carries the canonical fields plus origin."""
    fb = {
        "kind": "feedback",
        "source_id": "1022-1",
        "unit": "86-28894",
        "category": "GT-01",
        "description": "Ổ gà",
        "received_at": "2026-11-20T07:42:10+07:00",
    }
    row = records.to_dict(records.build("86", fb).envelope("86", 5))
    assert {k: row[k] for k in ("kind", "source_id", "unit", "category", "description", "received_at", "origin")} == {**fb, "origin": "86"}


def test_the_content_hash_is_the_one_stores_already_hold() -> None:
    """Re-dropping a file must find its rows unchanged: the hash of unit, agency, deleted and body is byte for byte the
    one written before it was computed in one call (values from the code before, f4a22e2)."""
    assert (
        records.content_hash(records.Envelope(unit="86-28894", agency="thongke", deleted=True, body=b"\x0a\x03abc")).hex()
        == "ef82de8855aadbf8"
    )
    assert records.content_hash(records.Envelope(unit="Đơn vị", agency="", deleted=False, body=b"")).hex() == "c82376277ea6878f"
    assert records.content_hash_of("Đơn vị", "", False, b"") == bytes.fromhex("c82376277ea6878f")
