"""Benchmark: exact top-k cosine search through Spark (jobs/similar.py's code) beside faiss IndexFlatIP.

    .venv/bin/python -m benchmarks.bench_similar [--rows 100000,1000000] [--dims 256,1024] [--queries 1,100,1000]

For each table size and dimension: generated unit vectors in a Delta table (several files), then for each query
count the Spark search on local[2] (read, one float32 product per Arrow batch, per-partition top 10, one merge)
and faiss's exact inner-product search over the same vectors in this process (pip install faiss-cpu; both use
the 2 cores). Prints seconds, vectors scanned per second per core, the Spark/faiss time ratio, whether both
returned the same neighbours, and the machine's float32 GEMM peak measured here (GFLOP/s) with the share of it
each search reached. Goal: Spark within 2x of faiss at 1,000 queries.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
K = 10
CORES = 2


def gemm_peak() -> float:
    """GFLOP/s of a large float32 matrix product on this machine, best of a few."""
    a = np.random.default_rng(0).standard_normal((2048, 1024)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((1024, 1024)).astype(np.float32)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 2048 * 1024 * 1024 / best / 1e9


def write_vectors(path: Path, rows: int, dim: int) -> np.ndarray:
    from deltalake import write_deltalake

    rng = np.random.default_rng(dim + rows)
    chunk = 25_000  # one file per chunk, as incremental appends and multi-task writes leave them
    kept = []
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        vectors = rng.standard_normal((n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        kept.append(vectors)
        values = pa.array(vectors.reshape(-1), pa.float32())
        offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32))
        table = pa.table(
            {
                "id": pa.array([f"v{i:08d}" for i in range(start, start + n)]),
                "embedding": pa.ListArray.from_arrays(offsets, values),
                "model_id": ["bench"] * n,
                "layer": ["elmo"] * n,
                "pooling": ["mean"] * n,
                "dim": pa.array([dim] * n, pa.int32()),
            }
        )
        write_deltalake(str(path), table, mode="append")
    return np.concatenate(kept)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="100000,1000000")
    parser.add_argument("--dims", default="256,1024")
    parser.add_argument("--queries", default="1,100,1000")
    args = parser.parse_args()
    try:
        import faiss
    except ImportError:
        sys.exit("bench_similar: faiss is not installed: .venv/bin/pip install faiss-cpu")
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from jobs.lake.delta_tables import read_delta
    from jobs.platform.config import load_config
    from jobs.platform.session import get_spark
    from jobs.similar import local_set_files, top_k

    spark = get_spark(
        load_config(
            "local",
            [
                "spark.master=local[2]",
                "spark.conf.spark.driver.memory=8g",
                "spark.conf.spark.ui.enabled=false",
            ],
        )
    )
    peak = gemm_peak()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; float32 GEMM peak here {peak:.0f} GFLOP/s; k={K}"
    )
    print(
        f"{'rows':>9} {'dim':>5} {'queries':>7} {'spark s':>8} {'faiss s':>8} {'ratio':>6} "
        f"{'spark vec/s/core':>16} {'faiss vec/s/core':>16} {'spark %peak':>11} {'same':>5}"
    )
    work = Path(tempfile.mkdtemp(prefix="bench-similar-"))
    for rows in map(int, args.rows.split(",")):
        for dim in map(int, args.dims.split(",")):
            table = work / f"v{rows}_{dim}"
            vectors = write_vectors(table, rows, dim)
            index = faiss.IndexFlatIP(dim)
            index.add(vectors)
            emb = read_delta(spark, str(table), "delta-rs")
            key = {"model_id": "bench", "layer": "elmo", "pooling": "mean"}
            files = local_set_files(load_config("local", ["delta.engine=delta-rs"]), str(table), key)
            for n in map(int, args.queries.split(",")):
                rng = np.random.default_rng(n)
                queries = vectors[rng.choice(rows, n, replace=False)] + 0.1 * rng.standard_normal(
                    (n, dim)
                ).astype(np.float32)
                start = time.perf_counter()
                labels = [str(i) for i in range(n)]
                found = top_k(spark, emb, queries, labels, [None] * n, K, None, files, key).collect()
                spark_s = time.perf_counter() - start
                unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
                start = time.perf_counter()
                _, neighbours = index.search(unit.astype(np.float32), K)
                faiss_s = time.perf_counter() - start
                ours = {(int(r["query"]), int(r["id"][1:])) for r in found}
                theirs = {(q, int(i)) for q in range(n) for i in neighbours[q]}
                same = len(ours & theirs) / len(theirs)
                flops = 2.0 * rows * dim * n
                print(
                    f"{rows:>9} {dim:>5} {n:>7} {spark_s:>8.2f} {faiss_s:>8.2f} {spark_s / faiss_s:>6.2f} "
                    f"{rows / spark_s / CORES:>16,.0f} {rows / faiss_s / CORES:>16,.0f} "
                    f"{100 * flops / spark_s / 1e9 / peak:>10.1f}% {same:>5.3f}",
                    flush=True,
                )
            del vectors, index
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
