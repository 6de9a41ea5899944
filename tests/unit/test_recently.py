"""RecentlyDone: a bounded memory, the oldest forgotten first."""

from __future__ import annotations

from natsflow.actors.recently import RecentlyDone, RecentResults


def test_it_remembers_the_last_keys_only() -> None:
    done = RecentlyDone(3)
    for key in ("a", "b", "c", "a", "d"):  # "a" again: it becomes the newest
        done.add(key)
    assert len(done) == 3
    assert "b" not in done
    assert all(key in done for key in ("a", "c", "d"))


def test_results_are_kept_within_a_byte_budget() -> None:
    results = RecentResults(size=10, max_bytes=160)
    results.add("k1", "natsflow.in.a", b"x" * 8)
    results.add("big", "natsflow.in.a", b"x" * 11)  # over 1/16 of the budget: not kept
    for n in range(2, 30):
        results.add(f"k{n}", "natsflow.in.a", b"x" * 8)
    assert results.get("big") is None
    assert results.get("k1") is None  # the oldest went first
    assert results.get("k29") == ("natsflow.in.a", b"x" * 8)
    assert len(results) == 10
