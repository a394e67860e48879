"""How much of a core other work took while a benchmark ran, from /proc/stat (Linux): other
processes, interrupts and the hypervisor's steal time. For in-process benchmarks that must not
count a run during which something else (a test suite, a build) shared their core.

`Meter(cpu)` measures, over a block, the busy time of core `cpu` (or of all cores) minus the
CPU time of this process, in cores. A process pinned to `cpu` runs only there, so the rest is
what others took from it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
_TICK = os.sysconf("SC_CLK_TCK")


def busy_seconds(cpu: int | None = None) -> float:
    """CPU seconds core `cpu` (None: all cores) spent since boot, idle and I/O wait left out,
    steal time counted."""
    name = "cpu" if cpu is None else f"cpu{cpu}"
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            for line in stat:
                fields = line.split()
                if fields and fields[0] == name:
                    ticks = [int(x) for x in fields[1:9]]
                    return (sum(ticks) - ticks[3] - ticks[4]) / _TICK
    except OSError:
        pass
    return 0.0


class Meter:
    """`load`: cores' worth of time others took on `cpu` (None: the machine) during the block."""

    def __init__(self, cpu: int | None = None) -> None:
        self.cpu = cpu
        self.load = 0.0

    def __enter__(self) -> Meter:
        self._busy = busy_seconds(self.cpu)
        self._own = time.process_time()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._wall
        own = time.process_time() - self._own
        others = busy_seconds(self.cpu) - self._busy - own
        self.load = max(0.0, others / wall) if wall > 0 else 0.0


def measured(call: Callable[[], T], cpu: int | None = None) -> tuple[T, float]:
    """`call()` and the load others put on `cpu` while it ran (cores)."""
    with Meter(cpu) as meter:
        result = call()
    return result, meter.load
