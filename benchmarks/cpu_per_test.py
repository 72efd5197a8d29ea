"""A pytest plugin: the CPU seconds each test cost, its whole process tree counted (``profile_suite --per-test``).

On two cores the suite is CPU-bound, so a test's wall time says more about what ran beside it than about what it
costs. Around each test (setup, call and teardown) this reads the CPU time of the pytest process and of every
process below it: the test session's JVM, Spark's Python workers, the jobs and servers the test starts, and what
they already reaped. The difference is the test's. A process that leaves the tree (a daemon that detaches) is
counted only while it is below it. Each pytest process appends one JSON line per test to
``$ELMO_LAKE_CPU_PER_TEST.<worker>.jsonl``.
"""

from __future__ import annotations

import json
import os
import time

import pytest

TICKS = os.sysconf("SC_CLK_TCK")
OUT = os.environ.get("ELMO_LAKE_CPU_PER_TEST")


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system, with those of reaped children) of ``root`` and every live process below it."""
    children: dict[int, list[int]] = {}
    cpu: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"{entry.path}/stat") as f:
                stat = f.read()
        except OSError:  # gone since the listing
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        cpu[pid] = sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total / TICKS


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not OUT:
        yield
        return
    me = os.getpid()
    cpu, wall = tree_cpu(me), time.monotonic()
    yield
    line = {
        "test": item.nodeid,
        "cpu": round(tree_cpu(me) - cpu, 2),
        "wall": round(time.monotonic() - wall, 2),
    }
    with open(f"{OUT}.{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
