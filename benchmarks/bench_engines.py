"""Benchmark: each pipeline stage on the two Delta engines, the Delta connector and delta-rs.

    .venv/bin/python -m benchmarks.bench_engines [--rows 0|31680]

Runs ``./spark-submit.sh jobs/pipeline.py`` (classic Spark, local[2]) once per engine on the same inputs, each into
a fresh folder: ``--set delta.engine=spark`` (the connector; ./setup.sh installs its jars) and
``--set delta.engine=delta-rs``. Prints each stage's seconds (from report.json) and the whole command's, with the
ratio of delta-rs to the connector, and each run's F1 (the same on both: the tables are the same). ``--rows 0`` is
the built-in sample; ``--rows N`` takes N labelled rows made from ../shared/data/tweets/train.csv.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

from benchmarks.bench_connect import STAGES, make_inputs, run_pipeline

ENGINES = {"connector": "delta.engine=spark", "delta-rs": "delta.engine=delta-rs"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=0, help="labelled rows (0: the built-in sample)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    train, score = make_inputs(args.rows, work)
    results = {}
    for name, setting in ENGINES.items():
        print(f"running the pipeline on {name} ...", file=sys.stderr, flush=True)
        results[name] = run_pipeline("classic-cache", train, score, work / name, None, (setting,))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}; local[2]")
    print(f"input: {'built-in sample' if args.rows == 0 else f'{args.rows} labelled rows'} + {score}")
    print(f"{'stage (s)':<12}{'connector':>12}{'delta-rs':>12}{'delta-rs / connector':>24}")
    for stage in (*STAGES, "total"):
        a, b = (results[n]["total"] if stage == "total" else results[n]["stages"][stage] for n in ENGINES)
        print(f"{stage:<12}{a:>12.1f}{b:>12.1f}{(b / a if a else 0):>23.2f}x")
    print(f"{'F1':<12}" + "".join(f"{results[n]['f1']:>12.4f}" for n in ENGINES))
    print(f"{'written by':<12}" + "".join(f"{str(results[n]['delta_engine']):>22}" for n in ENGINES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
