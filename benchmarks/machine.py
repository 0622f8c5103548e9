"""How busy the machine was with *other* work while a benchmark ran.

On a small machine (2 cores here) another process on one core turns every 2-thread
parallel region into a wait for the descheduled thread; ratios measured that way are
noise. :class:`OtherLoad` reads total CPU time from ``/proc/stat`` and subtracts this
process's own (and its children's) CPU time, so the result says how many cores other
processes used on average, and the report can say the figures are not to be trusted.
"""

from __future__ import annotations

import os
import resource
import time
from typing import Any

BUSY_THRESHOLD = 0.15  # other processes used more than 15% of one core on average: warn


def _proc_stat_busy() -> float | None:
    """Seconds of busy CPU time (all cores) since boot, or None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()[1:]
    except OSError:
        return None
    ticks = [int(x) for x in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    busy = sum(ticks[:8]) - idle  # user nice system idle iowait irq softirq steal (guest is in user)
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class OtherLoad:
    """``with OtherLoad() as load: ...`` then ``load.summary()``."""

    def __enter__(self) -> "OtherLoad":
        self.t0, self.busy0, self.own0 = time.perf_counter(), _proc_stat_busy(), _own_cpu()
        self.cores = None
        return self

    def __exit__(self, *exc: Any) -> None:
        self.elapsed = time.perf_counter() - self.t0
        busy1 = _proc_stat_busy()
        own = _own_cpu() - self.own0
        if self.busy0 is None or busy1 is None or self.elapsed <= 0:
            self.cores = None
        else:
            self.cores = max(0.0, ((busy1 - self.busy0) - own) / self.elapsed)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "other_load_cores": round(self.cores, 2) if self.cores is not None else None,
            "cpu_count": os.cpu_count(),
        }
        if self.cores is not None and self.cores > BUSY_THRESHOLD:
            out["busy_warning"] = (
                f"other processes used {self.cores:.2f} of {os.cpu_count()} cores on average "
                "during this benchmark: timings are inflated and ratios are noisy; rerun on an "
                "idle machine"
            )
        return out
