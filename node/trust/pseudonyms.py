"""The province-wide pseudonym secret: made beside the CA, handed to units, never held by the province's node.

    CA:        for_ca(ca_dir)                 -> CA_DIR/pseudonym.key (0600), made on first use (`ca init`)
    a unit:    install(key, tls_dir)          -> tls/pseudonym.key (0600), at enrollment or `init --ca`

Units key their citizens' pseudonyms with it (`sync/privacy.py`); the province's
node receives those pseudonyms and must not be able to recompute them, so its own
directory never gets the secret (`init --ca --mode provincial` does not install it,
and the enrollment listener reads it from the CA directory only to hand it over).
Rotation: `lienthong ca rotate-pseudonym CA_DIR` makes a new generation (a new key id);
units take it with their next renewal (`renewal.issue_renewal` sends it to units only)
or enrollment; pseudonyms name their key id and compare within one generation. See docs/security.md.
"""

from __future__ import annotations

from pathlib import Path

from lienthong.sync.privacy import PSEUDONYM_KEY_FILE, PseudonymKey

from .tls import write_private


def for_ca(ca_dir: Path) -> PseudonymKey:
    """The CA's pseudonym secret, made (mode 0600) if this CA has none yet."""
    path = Path(ca_dir) / PSEUDONYM_KEY_FILE
    key = PseudonymKey.load(path)
    if key is None:
        key = PseudonymKey.generate()
        write_private(path, key.to_file())
    return key


def rotate(ca_dir: Path) -> PseudonymKey:
    """A new generation of the secret in the CA directory (the old one is kept as pseudonym.key.KEY_ID)."""
    path = Path(ca_dir) / PSEUDONYM_KEY_FILE
    old = for_ca(ca_dir)
    write_private(path.with_name(f"{PSEUDONYM_KEY_FILE}.{old.key_id}"), old.to_file())
    key = PseudonymKey.generate()
    write_private(path, key.to_file())
    return key


def install(key: PseudonymKey, tls_dir: Path) -> Path:
    """Keep `key` in a unit's TLS folder, mode 0600, beside its signing key."""
    path = Path(tls_dir) / PSEUDONYM_KEY_FILE
    write_private(path, key.to_file())
    return path
