"""`lienthong demo` runs a province and its subordinate nodes and exits 0 with a summary."""

from __future__ import annotations

import pytest

from .helpers import cli

pytestmark = pytest.mark.slow


@pytest.mark.timeout(900)  # four minutes on a machine loaded with other jobs: more than the default backstop
def test_demo_runs_to_completion() -> None:
    """The README's main job: four subordinate nodes (one two tiers down), data flows both ways, every
    record verifies, a dispatched feedback item's resolution comes back, completeness and a roll-up, exit 0."""
    out = cli("demo", "--children", "3", "--records", "2000", "--timeout", "180", timeout=200)
    text = " ".join(out.stdout.split())  # the console wraps long lines
    assert "OK: the province holds all" in text
    assert "86-28894.tyt" in text and "Trạm Y tế xã Ba Tri" in text
    assert "dispatched feedback reached its communes and their resolution came back" in text
    assert "Provenance: the province re-verified" in text
    assert "1022-20261120-000153 │ 86-28894 │ resolved" in text
    assert "The province's console (while the demo runs): http://127.0.0.1:" in text
    assert "report completeness, 2026-10" in text and "indicators rolled up to 86, 2026-10" in text
