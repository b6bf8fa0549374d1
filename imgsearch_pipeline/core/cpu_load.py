"""How much of the machine's CPU other processes used while something was measured.

A latency measured while other processes keep the cores busy is slower than the same
search on a quiet machine (a make demo timed the exact search at p50 5.85 ms beside a graph
build, 1.31 ms alone). The load average cannot say it, since it counts the measuring
process's own threads; so the machine's busy CPU time (``/proc/stat``) less this process's
own (and its waited-for children's) is the others' share, recorded beside each timing.
Plain functions: the recall report and the benchmarks both use them.
"""

import os

# Measured under load when other processes kept more than this share of the machine's CPU
# time (all cores) busy while it was timed.
OTHERS_SHARE_LIMIT = 0.15


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


def cpu_seconds(stat_line: str, tick: int) -> tuple[float, float]:
    """(busy, all) CPU seconds from /proc/stat's first line (``cpu user nice system idle
    iowait irq softirq steal ...``, in clock ticks)."""
    fields = [int(x) for x in stat_line.split()[1:9]]
    # user nice system idle iowait irq softirq steal: idle and iowait are not busy
    return (sum(fields) - fields[3] - fields[4]) / tick, sum(fields) / tick


def others_share(machine_before: tuple[float, float], machine_after: tuple[float, float],
                 own_before: float, own_after: float) -> float:
    """The share of the machine's CPU time (all cores) between two (busy, all) readings
    that processes other than this one (and the children it waited for) kept busy."""
    elapsed = machine_after[1] - machine_before[1]
    others = (machine_after[0] - machine_before[0]) - (own_after - own_before)
    return min(1.0, max(0.0, others / elapsed)) if elapsed > 0 else 0.0


def _machine_cpu_seconds() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        return cpu_seconds(stat.readline(), os.sysconf("SC_CLK_TCK"))


def _own_cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of the children it waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class OthersCpuShare:
    """The share of the machine's CPU time other processes used since this was made."""

    def __init__(self) -> None:
        self._machine = _machine_cpu_seconds()
        self._own = _own_cpu_seconds()

    def share(self) -> float:
        return others_share(self._machine, _machine_cpu_seconds(), self._own, _own_cpu_seconds())


def load_now(others_share: float) -> dict:
    """The 1-minute load average, the usable cores, other processes' CPU share and whether
    that counts as loaded."""
    return {"load_1min": round(os.getloadavg()[0], 2), "cores": usable_cores(),
            "others_cpu_share": round(others_share, 3),
            "loaded": others_share > OTHERS_SHARE_LIMIT}
