"""Recognising Vietnamese text typed in the legacy TCVN3 (ABC) or VNI encodings.

Before Unicode, Vietnamese offices typed with 8-bit fonts (.VnTime for TCVN3, VNI-Times
for VNI) that draw Vietnamese letters in place of Latin-1 symbols. Such text, saved as
CSV or kept in a workbook, reads as "M· chØ tiªu" (TCVN3) or "Maõ chæ tieâu" (VNI)
where "Mã chỉ tiêu" was meant. It is not guessed at or converted here: a file whose
header is in one of them is refused with a hint to convert it to Unicode (Unikey's
converter does it), since every code and name in it would otherwise be stored garbled.

`legacy_encoding(raw)` looks for the column headers agencies use ("Mã chỉ tiêu",
"Kỳ báo cáo", "Giá trị", ...) written in either encoding, in the bytes of a line
(a CSV line as read from disk, or a workbook cell's text as the cp1252 bytes its
font drew). The tables cover the letters of those headers and every other
Vietnamese letter, lower and upper case.
"""

from __future__ import annotations

import unicodedata

# Tone marks as NFD combining characters, in the order the tables list them.
_TONES = ("", "\u0300", "\u0309", "\u0303", "\u0301", "\u0323")  # none, grave, hook, tilde, acute, dot
# The vowel bases, as NFC letters without a tone.
_BASES = ("a", "ă", "â", "e", "ê", "i", "o", "ô", "ơ", "u", "ư", "y")

# TCVN3 (ABC): one byte per letter; a tone-less base that is plain ASCII stays ASCII.
_TCVN3 = {
    "a": (None, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9),
    "ă": (0xA8, 0xBB, 0xBC, 0xBD, 0xBE, 0xC6),
    "â": (0xA9, 0xC7, 0xC8, 0xC9, 0xCA, 0xCB),
    "e": (None, 0xCC, 0xCE, 0xCF, 0xD0, 0xD1),
    "ê": (0xAA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6),
    "i": (None, 0xD7, 0xD8, 0xDC, 0xDD, 0xDE),
    "o": (None, 0xDF, 0xE1, 0xE2, 0xE3, 0xE4),
    "ô": (0xAB, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9),
    "ơ": (0xAC, 0xEA, 0xEB, 0xEC, 0xED, 0xEE),
    "u": (None, 0xEF, 0xF1, 0xF2, 0xF3, 0xF4),
    "ư": (0xAD, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9),
    "y": (None, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE),
}
# Upper case: the tone-less letters have their own bytes; toned capitals are drawn by the
# capitals font (.VnTimeH) from the lower-case bytes.
_TCVN3_UPPER_BASE = {"Ă": 0xA1, "Â": 0xA2, "Ê": 0xA3, "Ô": 0xA4, "Ơ": 0xA5, "Ư": 0xA6, "Đ": 0xA7}

# VNI: an ASCII base letter followed by a mark byte; a few letters are one byte.
_VNI_TONE = (None, 0xF8, 0xFB, 0xF5, 0xF9, 0xEF)  # after a, e, o, u, y, ơ, ư
_VNI_HAT = (0xE2, 0xE0, 0xE5, 0xE3, 0xE1, 0xE4)  # â ê ô: circumflex, then with each tone
_VNI_BREVE = (0xEA, 0xE8, 0xFA, 0xFC, 0xE9, 0xEB)  # ă
_VNI_I = (None, 0xEC, 0xE6, 0xF3, 0xED, 0xF2)  # i with each tone: one byte
_VNI_SINGLE = {"ơ": 0xF4, "ư": 0xF6, "đ": 0xF1}

# Header words as agencies write them (NFC; compared without regard to ASCII case).
HEADER_WORDS = (
    "mã chỉ tiêu",
    "tên chỉ tiêu",
    "đơn vị tính",
    "kỳ báo cáo",
    "mã đơn vị",
    "tên đơn vị",
    "giá trị",
    "số liệu",
    "ghi chú",
)


def _split(letter: str) -> tuple[str, int] | None:
    """('ê', 4) for 'ế': the base vowel and the tone's index, or None for a non-vowel."""
    nfd = unicodedata.normalize("NFD", letter)
    tone = next((i for i, t in enumerate(_TONES) if t and t in nfd), 0)
    base = unicodedata.normalize("NFC", nfd.replace(_TONES[tone], "") if tone else nfd)
    return (base, tone) if base in _BASES else None


def _tcvn3_letter(ch: str) -> bytes:
    lower = ch.lower()
    if ch in _TCVN3_UPPER_BASE:
        return bytes([_TCVN3_UPPER_BASE[ch]])
    if lower == "đ":
        return b"\xae"
    split = _split(lower)
    if split is None:
        return ch.encode("ascii", "replace")
    base, tone = split
    code = _TCVN3[base][tone]
    if code is None:
        return ch.encode("ascii", "replace")
    return bytes([code])


def _vni_letter(ch: str) -> bytes:
    upper = ch != ch.lower()
    lower = ch.lower()
    shift = 0x20 if upper else 0  # VNI's capital marks sit 0x20 below the small ones

    def b(code: int | None) -> bytes:
        return b"" if code is None else bytes([code - shift])

    if lower in _VNI_SINGLE:
        return b(_VNI_SINGLE[lower])
    split = _split(lower)
    if split is None:
        return ch.encode("ascii", "replace")
    base, tone = split
    ascii_base = {"ă": "a", "â": "a", "ê": "e", "ô": "o"}.get(base, base)
    head = (ascii_base.upper() if upper else ascii_base).encode()
    if base == "i":
        return b(_VNI_I[tone]) if tone else head
    if base == "y" and tone == 5:
        return b(0xEE)  # ỵ is one byte
    if base in ("â", "ê", "ô"):
        return head + b(_VNI_HAT[tone])
    if base == "ă":
        return head + b(_VNI_BREVE[tone])
    if base in ("ơ", "ư"):
        single = b(_VNI_SINGLE[base])
        return single + (b(_VNI_TONE[tone]) if tone else b"")
    return head + (b(_VNI_TONE[tone]) if tone else b"")


def encode(text: str, encoding: str) -> bytes:
    """`text` (NFC) as the bytes the TCVN3 or VNI font would have been given."""
    letter = _tcvn3_letter if encoding == "TCVN3" else _vni_letter
    return b"".join(letter(ch) for ch in unicodedata.normalize("NFC", text))


_SIGNATURES: dict[str, list[bytes]] = {
    encoding: sorted({encode(form, encoding).lower() for w in HEADER_WORDS for form in (w, w.upper(), w[:1].upper() + w[1:], w.title())})
    for encoding in ("TCVN3", "VNI")
}


def legacy_encoding(raw: bytes) -> str | None:
    """'TCVN3' or 'VNI' when `raw` holds a known column header in that encoding, else None."""
    folded = b" ".join(raw.lower().split())
    for encoding, signatures in _SIGNATURES.items():
        if any(sig in folded for sig in signatures):
            return encoding
    return None


def cell_bytes(text: str) -> bytes:
    """A workbook cell's text as the bytes its legacy font drew (cp1252), or b'' when it cannot be."""
    try:
        return text.encode("cp1252")
    except UnicodeEncodeError:
        return b""


def sample(raw: bytes, limit: int = 40) -> str:
    """A short piece of the garbled text, as a reader of the file sees it, for the receipt."""
    shown = " ".join(raw.decode("cp1252", "replace").split())
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"
