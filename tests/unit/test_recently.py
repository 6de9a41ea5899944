"""RecentlyDone: a bounded memory, the oldest forgotten first."""

from __future__ import annotations

from natsflow.actors.recently import RecentlyDone


def test_it_remembers_the_last_keys_only() -> None:
    done = RecentlyDone(3)
    for key in ("a", "b", "c", "a", "d"):  # "a" again: it becomes the newest
        done.add(key)
    assert len(done) == 3
    assert "b" not in done
    assert all(key in done for key in ("a", "c", "d"))
