"""`lienthong demo` runs a province and its subordinate nodes and exits 0 with a summary."""

from __future__ import annotations

import pytest

from .helpers import cli

pytestmark = pytest.mark.slow


def test_demo_runs_to_completion() -> None:
    """The README's main job: four subordinate nodes (one two tiers down), data flows both ways, exit 0."""
    out = cli("demo", "--children", "3", "--records", "2000", "--timeout", "180", timeout=240)
    assert "OK: the province holds all" in out.stdout
    assert "86-28894.tyt" in out.stdout and "Trạm Y tế xã Ba Tri" in out.stdout
    assert "dispatched feedback reached its communes" in out.stdout
