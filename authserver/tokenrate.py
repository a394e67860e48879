"""Tokens issued per minute, counted in this process only (the admin dashboard's figure).

The token endpoint bumps a ring of 61 per-minute buckets: no lock, no database, no I/O. Each
instance counts what it issued itself, so behind a load balancer every instance shows its own
share. Bumps come from the event loop's one thread; a bump racing another thread could lose a
count, which a rate figure can afford.
"""

from __future__ import annotations

from dataclasses import dataclass

MINUTES = 60
SLOTS = MINUTES + 1  # the hour before this minute, and this minute


@dataclass(frozen=True, slots=True)
class RateFigures:
    last_minute: int  # the last whole minute
    last_hour: int  # the 60 whole minutes before this one
    this_minute: int  # so far in the current minute

    @property
    def per_minute_last_hour(self) -> float:
        return self.last_hour / MINUTES


class TokenRate:
    """A ring of per-minute counts; a bucket is reset when its minute comes round again."""

    __slots__ = ("_counts", "_minutes")

    def __init__(self) -> None:
        self._minutes = [-1] * SLOTS
        self._counts = [0] * SLOTS

    def bump(self, now: float) -> None:
        """One token issued at `now` (Unix seconds): a few hundred nanoseconds."""
        minute = int(now) // 60
        slot = minute % SLOTS
        if self._minutes[slot] == minute:
            self._counts[slot] += 1
        else:
            self._minutes[slot] = minute
            self._counts[slot] = 1

    def _count(self, minute: int) -> int:
        slot = minute % SLOTS
        return self._counts[slot] if self._minutes[slot] == minute else 0

    def figures(self, now: float) -> RateFigures:
        minute = int(now) // 60
        return RateFigures(
            last_minute=self._count(minute - 1),
            last_hour=sum(self._count(minute - back) for back in range(1, MINUTES + 1)),
            this_minute=self._count(minute),
        )
