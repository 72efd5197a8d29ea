"""Benchmark: the pipeline over Spark Connect vs classic Spark, and what recomputing instead of caching costs.

    .venv/bin/python -m benchmarks.bench_connect [--rows 0|31680] [--modes classic-cache,classic-recompute,connect]

Runs ``./spark-submit.sh jobs/pipeline.py`` once per mode on the same inputs, each into a fresh folder:
``classic-cache`` (today's classic run: DataFrames read twice are cached), ``classic-recompute`` (classic Spark
with ``spark.cache_reused=false``: what serverless forces), ``connect`` (``--remote`` against a local Spark Connect
server, local[2], started here; it never caches). Prints each stage's seconds (from report.json) and the whole
command's, with each mode's ratio to classic-cache. ``--rows 0`` is the built-in sample; ``--rows N`` takes N
labelled rows made from ../shared/data/tweets/train.csv (repeated with unique ids) and scores unlabeled.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TWEETS = ROOT.parent / "shared" / "data" / "tweets"
STAGES = ("ingest", "clean", "embed", "train", "predict")  # report.json is written inside "report"


def make_inputs(rows: int, folder: Path) -> tuple[str, str]:
    if rows == 0:
        return str(ROOT / "samples" / "tweets_labelled.csv"), str(ROOT / "samples" / "tweets_unlabelled.csv")
    if not (TWEETS / "train.csv").exists():
        sys.exit(
            f"bench_connect: {TWEETS} is absent: --rows needs the project's shared data (or use --rows 0)"
        )
    with open(TWEETS / "train.csv", newline="", encoding="utf-8") as f:
        source = list(csv.DictReader(f))
    train = folder / f"train_{rows}.csv"
    with open(train, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "label", "tweet"])
        writer.writeheader()
        for i in range(rows):
            row = source[i % len(source)]
            writer.writerow(
                {"id": f"{row['id']}-{i // len(source)}", "label": row["label"], "tweet": row["tweet"]}
            )
    return str(train), str(TWEETS / "unlabeled.csv")


def run_pipeline(
    mode: str, train: str, score: str, out: Path, remote: str | None, settings: tuple[str, ...] = ()
) -> dict:
    """One ./spark-submit.sh jobs/pipeline.py run; ``settings`` are extra --set KEY=VALUE."""
    args = [str(ROOT / "spark-submit.sh")]
    job = ["jobs/pipeline.py", "--train", train, "--score", score, "--out", str(out)]
    if mode == "connect":
        args += ["--remote", remote, *job]
    else:
        args += [*job, "--set", "spark.master=local[2]"]
        if mode == "classic-recompute":
            args += ["--set", "spark.cache_reused=false"]
    for setting in settings:
        args += ["--set", setting]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPARK_REMOTE")}
    env.update(PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    start = time.perf_counter()
    done = subprocess.run(args, cwd=out.parent, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"benchmark: {mode} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    f1 = report["metrics"]["validation"]["f1"]
    stages = {s: report["stages"][s]["seconds"] for s in STAGES}
    return {"stages": stages, "total": seconds, "f1": f1, "delta_engine": report.get("delta_engine")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=0, help="labelled rows (0: the built-in sample)")
    parser.add_argument("--modes", default="classic-cache,classic-recompute,connect")
    args = parser.parse_args()
    modes = args.modes.split(",")
    work = Path(tempfile.mkdtemp(prefix="bench-connect-"))
    train, score = make_inputs(args.rows, work)
    server = None
    if "connect" in modes:
        sys.path.insert(0, str(ROOT))
        from jobs.connect_server import free_port, start_server

        port = free_port()
        server = start_server(port, work / "server", "local[2]")
        remote = f"sc://127.0.0.1:{port}"
    results = {}
    try:
        for mode in modes:
            print(f"running {mode} ...", file=sys.stderr, flush=True)
            results[mode] = run_pipeline(mode, train, score, work / mode, remote if server else None)
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}; local[2]")
    print(f"input: {'built-in sample' if args.rows == 0 else f'{args.rows} labelled rows'} + {score}")
    base = results[modes[0]]
    print(f"{'stage (s)':<12}" + "".join(f"{m:>20}" for m in modes))
    for stage in (*STAGES, "total"):
        cells = []
        for mode in modes:
            value = results[mode]["total"] if stage == "total" else results[mode]["stages"][stage]
            ref = base["total"] if stage == "total" else base["stages"][stage]
            cells.append(f"{value:8.1f} ({value / ref if ref else 0:4.2f}x)")
        print(f"{stage:<12}" + "".join(f"{c:>20}" for c in cells))
    print(f"{'F1':<12}" + "".join(f"{results[m]['f1']:>20.4f}" for m in modes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
