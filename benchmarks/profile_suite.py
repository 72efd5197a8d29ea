"""Where the test suite's CPU goes: runs pytest and prints CPU seconds per kind of process it started.

    .venv/bin/python -m benchmarks.profile_suite [--every 2] [-- PYTEST ARGS]

With no pytest arguments it runs what ``./setup.sh test`` runs (every test, two pytest-xdist workers). Every
``--every`` seconds it reads each process below pytest from /proc (its command line and CPU time so far); at the
end it prints, per kind of process (the test sessions' JVMs, the servers' JVMs the tests start, the short jobs they
launch, Spark's Python workers, ...), the CPU seconds, the share of all, and how many processes; then the wall
time, and the CPU it implies per core. A process's CPU counts up to its last reading, so one that lives less than
``--every`` seconds is missed: the figures are a lower bound, close for the long-lived processes that dominate.
Linux only (/proc). This is what to read before cutting the suite's time: on 2 cores it is CPU-bound.

``--per-test N`` also loads ``benchmarks/cpu_per_test.py`` into pytest and prints the N tests that cost the most
CPU (each test's whole process tree, setup and teardown included) and the CPU per test file: where to look first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
DEFAULT_PYTEST = [
    *("-m", "slow or not slow", "-n", "2", "--dist", "loadgroup", "--no-loadscope-reorder"),
    *("-q", "-p", "no:cacheprovider"),
]

DAEMONS = ("org.apache.spark.deploy.master.", "org.apache.spark.deploy.worker.", "org.apache.spark.executor.")
# (kind, test on the command line's words): the first that matches names the process
KINDS = (
    (
        "Connect / Thrift server JVMs",
        lambda a: (
            a[0].endswith("java") and any("SparkConnectServer" in w or "HiveThriftServer" in w for w in a)
        ),
    ),
    ("test sessions' JVMs (one per pytest worker)", lambda a: a[0].endswith("java") and "-Xmx3g" in a),
    ("short jobs' JVMs (spark-submit)", lambda a: a[0].endswith("java") and "-XX:TieredStopAtLevel=1" in a),
    (
        "standalone master, worker, executors",
        lambda a: a[0].endswith("java") and any(w.startswith(DAEMONS) for w in a),
    ),
    ("other JVMs (metastore, ...)", lambda a: a[0].endswith("java")),
    ("Spark's Python workers", lambda a: "pyspark.daemon" in a or "pyspark.worker" in a),
    ("pytest and its workers", lambda a: any("pytest" in w or "exec(eval(" in w for w in a)),
    ("jobs' Python drivers", lambda a: any("run_job.py" in w or w.startswith("jobs/") for w in a)),
    ("other Python (venv-pack, ...)", lambda a: "python" in Path(a[0]).name),
)


def descendants(root: int) -> dict[int, tuple[list[str], float]]:
    """Every live process below ``root`` (and itself): its command line and CPU seconds (user + system)."""
    parents, found = {}, {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            args = Path(entry.path, "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone since the listing
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        found[pid] = (
            [w.decode(errors="replace") for w in args if w] or ["?"],
            (int(fields[11]) + int(fields[12])) / TICKS,
        )
    below = {}
    for pid, (args, cpu) in found.items():
        up = pid
        while up not in (0, 1, root) and up in parents:
            up = parents[up]
        if up == root:
            below[pid] = (args, cpu)
    return below


def kind_of(args: list[str]) -> str:
    return next((name for name, test in KINDS if test(args)), "other: " + Path(args[0]).name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=float, default=2.0, help="seconds between readings (default 2)")
    parser.add_argument(
        "pytest_args", nargs="*", help="after --: pytest's arguments (default: the whole suite)"
    )
    parser.add_argument(
        "--per-test",
        type=int,
        default=0,
        metavar="N",
        help="also print the N tests that cost the most CPU, and the CPU per test file",
    )
    options = parser.parse_args()
    if not Path("/proc/self/stat").exists():
        sys.exit("profile_suite: needs Linux's /proc to read each process's CPU time")
    command = [sys.executable, "-m", "pytest", *(options.pytest_args or DEFAULT_PYTEST)]
    env = dict(os.environ)
    if options.per_test:
        per_test = Path(tempfile.mkdtemp(prefix="cpu-per-test-")) / "tests"
        command += ["-p", "benchmarks.cpu_per_test"]
        env["ELMO_LAKE_CPU_PER_TEST"] = str(per_test)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    print(
        f"profile_suite: {' '.join(command[2:])} on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores",
        flush=True,
    )
    started = time.monotonic()
    pytest = subprocess.Popen(command, cwd=ROOT, env=env)
    seen: dict[int, tuple[list[str], float]] = {}
    while pytest.poll() is None:
        for pid, (args, cpu) in descendants(pytest.pid).items():
            if args == ["?"] and pid in seen:
                args = seen[pid][0]  # on its way out a process has no command line left: keep the one read
            seen[pid] = (args, cpu)
        time.sleep(options.every)
    wall = time.monotonic() - started
    by_kind, count = Counter(), Counter()
    for args, cpu in seen.values():
        by_kind[kind_of(args)] += cpu
        count[kind_of(args)] += 1
    total = sum(by_kind.values())
    print(
        f"\nCPU seconds by kind of process (readings every {options.every:g} s; shorter-lived ones missed):"
    )
    for name, cpu in by_kind.most_common():
        print(f"  {cpu:8.0f} s  {100 * cpu / max(total, 1e-9):5.1f} %  {count[name]:4d} processes  {name}")
    print(
        f"  {total:8.0f} s  in all; wall {wall:.0f} s, so {total / wall:.2f} of {os.cpu_count()} cores busy"
    )
    if options.per_test:
        print_per_test(per_test, options.per_test)
    return pytest.returncode


def print_per_test(prefix: Path, top: int) -> None:
    """The ``top`` tests by CPU seconds, then each test file's sum, from cpu_per_test's JSON lines."""
    rows = [
        json.loads(line)
        for path in sorted(prefix.parent.glob(prefix.name + ".*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    if not rows:
        print("\nno per-test figures: the plugin wrote nothing (did pytest start?)")
        return
    total = sum(r["cpu"] for r in rows)
    print(f"\nCPU seconds per test (its process tree; setup and teardown included), the {top} largest:")
    for r in sorted(rows, key=lambda r: -r["cpu"])[:top]:
        print(f"  {r['cpu']:8.1f} s  {r['wall']:7.1f} s wall  {r['test']}")
    by_file = Counter()
    for r in rows:
        by_file[r["test"].split("::")[0]] += r["cpu"]
    print(f"\nCPU seconds per test file ({len(rows)} tests, {total:.0f} s in all):")
    for name, cpu in by_file.most_common():
        print(f"  {cpu:8.0f} s  {100 * cpu / max(total, 1e-9):5.1f} %  {name}")


if __name__ == "__main__":
    sys.exit(main())
