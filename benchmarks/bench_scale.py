"""Scale benchmark: ingest -> clean -> embed (default model) at two sizes, per-row cost and memory.

    .venv/bin/python -m benchmarks.bench_scale [--rows 31680,126720] [--cores 2]

Rows are generated from the real tweets (``../shared/data/tweets``): each row is a tweet, drawn at random, with
its words shuffled, and a unique id, written as one CSV. Each size runs in a fresh process (so peak memory is its
own) on ``local[cores]`` with the delta-rs engine and the default model (token cache on). Printed per stage:
rows/s and ms per row; the peak memory (max RSS) of the driver's Python process, of the driver's JVM (which is
also the executor in local mode) and of the Python workers; the files each table holds. Goal: per-row cost at
4x the rows within 10 % of the smaller run, driver memory flat.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TWEETS = ROOT.parent / "shared" / "data" / "tweets"


def tweets_absent() -> bool:
    """True, having said so, when ../shared's tweets are absent: the benchmarks made from them skip."""
    if (TWEETS / "train.csv").is_file():
        return False
    print(f"skipped: {TWEETS} is absent (this benchmark needs the project's shared tweets)")
    return True


def generate(rows: int, path: Path, seed: int = 0, start: int = 0) -> None:
    """``rows`` tweets with shuffled words and unique ids (from ``start``), as a CSV of id,label,tweet."""
    source = []
    for name in ("train.csv", "unlabeled.csv"):
        with open(TWEETS / name, encoding="utf-8", newline="") as fin:
            source += [(r.get("label") or "0", r["tweet"]) for r in csv.DictReader(fin)]
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="") as fout:
        writer = csv.writer(fout)
        writer.writerow(["id", "label", "tweet"])
        for i in range(start, start + rows):
            label, tweet = source[rng.randrange(len(source))]
            words = tweet.split()
            rng.shuffle(words)
            writer.writerow([f"g{i:07d}", label, " ".join(words)])


def jvm_peak_gb() -> float:
    """VmHWM of the JVM this process started (the driver, and the executor in local mode)."""
    peak = 0.0
    for child in Path("/proc").glob("[0-9]*"):
        try:
            status = (child / "status").read_text()
            if f"PPid:\t{os.getpid()}\n" not in status or "java" not in (child / "comm").read_text():
                continue
            kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
            peak = max(peak, kb / 1e6)
        except (OSError, StopIteration, ValueError):
            continue
    return peak


def run_size(rows: int, cores: int) -> dict:
    from deltalake import DeltaTable

    from benchmarks.bench_stages import worker_peak_rss
    from jobs import clean as clean_job
    from jobs import embed as embed_job
    from jobs import ingest as ingest_job
    from jobs.platform.config import load_config
    from jobs.platform.session import get_spark

    work = Path(tempfile.mkdtemp(prefix=f"bench-scale-{rows}-"))
    cfg = load_config(
        "local",
        [
            f"spark.master=local[{cores}]",
            "delta.engine=delta-rs",
            "spark.log_level=ERROR",
            "spark.conf.spark.ui.enabled=false",
        ],
    )
    spark = get_spark(cfg)
    try:
        generate(rows, work / "input.csv")
        stages = {}
        start = time.perf_counter()
        ingest_job.run(spark, cfg, str(work / "input.csv"), str(work / "docs"), str(work / "rejects"))
        stages["ingest"] = time.perf_counter() - start
        start = time.perf_counter()
        clean_job.run(spark, cfg, str(work / "docs"), str(work / "clean"))
        stages["clean"] = time.perf_counter() - start
        start = time.perf_counter()
        summary = embed_job.run(spark, cfg, str(work / "clean"), str(work / "emb"))
        stages["embed"] = time.perf_counter() - start
        files = {name: len(DeltaTable(str(work / name)).file_uris()) for name in ("docs", "clean", "emb")}
        embedded = DeltaTable(str(work / "emb")).to_pyarrow_table(columns=["id"]).num_rows
        return {
            "rows": rows,
            "embedded_rows": embedded,
            "tokens": summary.tokens,
            "seconds": {k: round(v, 1) for k, v in stages.items()},
            "files": files,
            "driver_python_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
            "driver_jvm_gb": round(jvm_peak_gb(), 2),
            "worker_gb": sorted(round(gb, 2) for gb in worker_peak_rss(spark, cores).values()),
        }
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_scale", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rows", default="31680,126720")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_size(args.one, args.cores)))
        return 0
    if tweets_absent():
        return 0
    print(
        f"machine: {platform.node()}, {os.cpu_count()} cores; Spark local[{args.cores}]; default model, cache on"
    )
    results = []
    for rows in (int(r) for r in args.rows.split(",")):
        cmd = [sys.executable, "-m", "benchmarks.bench_scale", "--one", str(rows), "--cores", str(args.cores)]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{rows} rows: failed\n{done.stderr[-3000:]}")
            return 1
        r = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(r)
        per_stage = ", ".join(
            f"{stage} {r['rows'] / secs:,.0f} rows/s ({1000 * secs / r['rows']:.2f} ms/row)"
            for stage, secs in r["seconds"].items()
        )
        print(
            f"{r['rows']:,} rows ({r['tokens']:,} tokens): {per_stage}; files docs/clean/emb "
            f"{r['files']['docs']}/{r['files']['clean']}/{r['files']['emb']}; peak memory: driver Python "
            f"{r['driver_python_gb']} GB, driver JVM {r['driver_jvm_gb']} GB, Python workers {r['worker_gb']} GB",
            flush=True,
        )
    if len(results) == 2:
        small, large = results
        for stage in small["seconds"]:
            ratio = (large["seconds"][stage] / large["rows"]) / (small["seconds"][stage] / small["rows"])
            print(
                f"{stage}: per-row cost at {large['rows'] / small['rows']:.0f}x the rows = {ratio:.2f}x the smaller run's"
            )
        total = (
            sum(large["seconds"].values()) / large["rows"] / (sum(small["seconds"].values()) / small["rows"])
        )
        print(
            f"all stages: {total:.2f}x; driver JVM {small['driver_jvm_gb']} -> {large['driver_jvm_gb']} GB, "
            f"driver Python {small['driver_python_gb']} -> {large['driver_python_gb']} GB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
