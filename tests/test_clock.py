"""The hybrid logical clock: monotonic on one node, ahead of everything it has seen."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lienthong.sync.clock import LOGICAL_BITS, MAX_SKEW_MS, HybridClock, physical_ms

# A step is either a local tick with a wall-clock reading (which may jump back), or
# a version observed from a peer (which may be ahead or behind).
steps = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.integers(1_700_000_000_000, 1_700_000_100_000)),
        st.tuples(st.just("observe"), st.integers(1_700_000_000_000 << LOGICAL_BITS, 1_700_000_100_000 << LOGICAL_BITS)),
    ),
    max_size=200,
)


@given(steps)
def test_versions_strictly_increase_and_pass_everything_seen(ops: list[tuple[str, int]]) -> None:
    """Whatever the wall clock and peers do, each version is greater than all before it and all observed."""
    wall = [1_700_000_000_000]
    clock = HybridClock(wall=lambda: wall[0])
    issued: list[int] = []
    seen = 0
    for op, value in ops:
        if op == "tick":
            wall[0] = value
            version = clock.now()
            assert not issued or version > issued[-1]
            assert version > seen
            assert physical_ms(version) >= value  # never behind the wall clock
            issued.append(version)
        else:
            clock.observe(value)
            seen = max(seen, value) if physical_ms(value) <= wall[0] + MAX_SKEW_MS else seen


def test_a_peer_far_in_the_future_does_not_drag_the_clock() -> None:
    """A version more than a day ahead (a broken peer clock) is ignored by the clock."""
    clock = HybridClock(wall=lambda: 1_700_000_000_000)
    clock.observe((1_700_000_000_000 + MAX_SKEW_MS + 1) << LOGICAL_BITS)
    assert physical_ms(clock.now()) == 1_700_000_000_000


def test_seeded_clock_continues_after_restart() -> None:
    """A node restarted with a slower wall clock still issues versions above its stored ones."""
    before = HybridClock(wall=lambda: 1_700_000_050_000).now()
    after = HybridClock(last=before, wall=lambda: 1_700_000_000_000).now()
    assert after > before


@given(st.lists(st.tuples(st.integers(1_700_000_000_000, 1_700_000_100_000), st.integers(0, 3_000)), max_size=40))
def test_a_reserved_run_of_versions_is_what_now_would_have_given_one_by_one(runs: list[tuple[int, int]]) -> None:
    """`reserve(n)` (a file's records numbered in one call) gives the n versions n calls of `now()` give, and later ones pass them."""
    wall = [1_700_000_000_000]
    batched = HybridClock(wall=lambda: wall[0])
    single = HybridClock(wall=lambda: wall[0])
    for ms, count in runs:
        wall[0] = ms
        first = batched.reserve(count)
        assert list(range(first, first + max(count, 1))) == [single.now() for _ in range(max(count, 1))]
        assert batched.now() == single.now()
