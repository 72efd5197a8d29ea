"""Benchmark: ingest throughput and delta-rs engine write/read throughput on this machine.

    .venv/bin/python -m benchmarks.bench_ingest [--rows 200000] [--master local[*]]

Prints rows/s and MB/s (input CSV bytes for ingest; Parquet bytes on disk for Delta write/read).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import tempfile
import time

from pyspark.sql import functions as F

from jobs.ingest import run as ingest
from jobs.lake.delta_tables import read_delta, write_delta
from jobs.platform.config import load_config
from jobs.platform.session import get_spark

WORDS = "phone battery screen update love hate camera laptop tablet charger fast slow great broken #tech @user".split()


def synthetic_csv(path: str, rows: int) -> int:
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as f:
        f.write("id,label,tweet\n")
        for i in range(rows):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 24)))
            if i % 50 == 0:
                text = f'"{text}\nsecond line with ""quotes"" and emoji 📱"'
            f.write(f"{i},{rng.randint(0, 1)},{text}\n")
    return os.path.getsize(path)


def folder_bytes(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(d, f))
        for d, _, fs in os.walk(path)
        for f in fs
        if f.endswith(".parquet")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--master", default="local[*]")
    args = parser.parse_args()
    cfg = load_config(
        "local", [f"spark.master={args.master}", "delta.engine=delta-rs", "spark.log_level=ERROR"]
    )
    spark = get_spark(cfg)
    work = tempfile.mkdtemp(prefix="bench-ingest-")
    try:
        csv_path = os.path.join(work, "in.csv")
        csv_bytes = synthetic_csv(csv_path, args.rows)
        print(f"machine: {platform.node()} {os.cpu_count()} cores, Spark master {args.master}")
        print(f"input: {args.rows} rows, {csv_bytes / 1e6:.1f} MB CSV")

        start = time.perf_counter()
        summary = ingest(spark, cfg, csv_path, os.path.join(work, "docs"), os.path.join(work, "rejects"))
        took = time.perf_counter() - start
        print(
            f"ingest (CSV -> Delta, validation, dedup): {took:.1f} s, {summary.added / took:,.0f} rows/s, "
            f"{csv_bytes / 1e6 / took:.1f} MB/s of CSV"
        )

        docs = read_delta(spark, os.path.join(work, "docs"), "delta-rs").cache()
        docs.count()
        start = time.perf_counter()
        result = write_delta(docs.repartition(4), os.path.join(work, "copy"), engine="delta-rs")
        took = time.perf_counter() - start
        written = folder_bytes(os.path.join(work, "copy"))
        print(
            f"delta-rs write ({result.num_files} files, one commit): {took:.1f} s, "
            f"{result.num_records / took:,.0f} rows/s, {written / 1e6 / took:.1f} MB/s of Parquet"
        )

        start = time.perf_counter()
        back = read_delta(spark, os.path.join(work, "copy"), "delta-rs")
        total = back.agg(F.count("*").alias("n"), F.sum(F.length("text")).alias("chars")).collect()[0]
        took = time.perf_counter() - start
        print(
            f"delta-rs read (full scan): {took:.1f} s, {total['n'] / took:,.0f} rows/s, "
            f"{written / 1e6 / took:.1f} MB/s of Parquet"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        spark.stop()


if __name__ == "__main__":
    main()
