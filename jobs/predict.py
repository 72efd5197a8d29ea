"""Predict job: an embedding table + a saved classifier -> a Delta table of predictions (and a CSV on request).

    ./spark-submit.sh jobs/predict.py --embeddings EMB_TABLE --classifier CLASSIFIER_DIR --output PREDICTIONS_TABLE
                                      [--csv FILE]

Every id of the embedding table (for the classifier's model_id, layer and pooling) gets exactly one row:
``id``, ``probability``, ``label`` (probability >= the classifier's threshold), ``classifier_id``. Documents without
tokens are scored from a zero vector. Re-running adds nothing; ``--csv`` writes ``id,label`` like a contest
submission file.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.lake.delta_tables import (
    append_on_snapshot,
    commit_metadata,
    engine_name,
    read_delta,
    retry_once_on_conflict,
    rows_missing_from,
)
from jobs.lake.embedding_sets import embedding_set
from jobs.lake.increments import find_work
from jobs.learning.classifier import Classifier
from jobs.platform.cli import job_parser, log, run_job
from jobs.platform.config import Config
from jobs.platform.errors import InputError
from jobs.platform.paths import local_path
from jobs.platform.session import get_spark, release, reuse

PREDICTIONS_DESCRIPTION = "elmo-lake predictions: id, probability of label 1, label (0/1 at the classifier's threshold), classifier_id"


def score(emb: DataFrame, classifier: Classifier) -> DataFrame:
    """Embedding rows -> predictions. No I/O."""
    probability = classifier.probability(F.col("embedding"))
    return emb.select(
        "id",
        probability.alias("probability"),
        (probability >= F.lit(classifier.threshold)).cast("int").alias("label"),
        F.lit(classifier.classifier_id).alias("classifier_id"),
    )


def embeddings_for(spark: SparkSession, cfg: Config, table: str, classifier: Classifier) -> DataFrame:
    emb = read_delta(spark, table, cfg.delta.engine)
    mine = emb.where(embedding_set(classifier.model_id, classifier.layer, classifier.pooling))
    if mine.limit(1).count() == 0:
        found = "; ".join(
            f"{r['model_id']} {r['layer']} {r['pooling']}"
            for r in emb.select("model_id", "layer", "pooling").distinct().collect()
        )
        raise InputError(
            f"{table} has no embeddings from the classifier's model {classifier.model_id} ({classifier.layer}, "
            f"{classifier.pooling}); found: {found or 'none'}. Embed with that model, or train a classifier on these"
        )
    return mine


def run(
    spark: SparkSession,
    cfg: Config,
    embeddings: str,
    classifier_dir: str,
    output: str,
    csv_path: str | None = None,
) -> int:
    classifier = Classifier.load(classifier_dir)
    embeddings_for(spark, cfg, embeddings, classifier)  # the model's embeddings are there, or a clear error
    added = retry_once_on_conflict(
        "predict", output, lambda: _append_missing(spark, cfg, embeddings, output, classifier)
    )
    log("predict", f"{added} new predictions with {classifier.classifier_id} in {output}")
    if csv_path:
        write_csv(spark, cfg, output, classifier.classifier_id, csv_path)
    return added


def _append_missing(
    spark: SparkSession, cfg: Config, embeddings: str, output: str, classifier: Classifier
) -> int:
    """Append the ids the output lacks for this classifier at its current version, on top of that version: of
    the embeddings, those added since the last run (``jobs/lake/increments.py``), else all of them."""
    classifier_id = classifier.classifier_id
    work = find_work(
        spark,
        cfg,
        "predict",
        embeddings,
        output,
        stream={"classifier_id": classifier_id},
        log=lambda line: log("predict", line),
    )
    mine = work.rows.where(embedding_set(classifier.model_id, classifier.layer, classifier.pooling))
    predictions = score(mine, classifier)
    if work.all_new:  # embeddings the input gained since the last run: none has a prediction yet
        version = work.output_version
    else:
        predictions, version = rows_missing_from(
            spark, predictions, output, cfg.delta.engine, ["id"], F.col("classifier_id") == classifier_id
        )
    predictions = reuse(predictions)  # counted, then written: SQL scoring, cheap to recompute
    try:
        added = predictions.count()
        if added or version is None:
            append_on_snapshot(
                predictions,
                output,
                cfg,
                version,
                ["id", "classifier_id"],
                PREDICTIONS_DESCRIPTION,
                user_metadata=commit_metadata("predict", classifier_id=classifier_id, **work.progress),
            )
    finally:
        release(predictions)
    return added


def write_csv(spark: SparkSession, cfg: Config, table: str, classifier_id: str, path: str) -> None:
    """``id,label`` for every id, sorted numerically where ids are numbers; written atomically."""
    rows = (
        read_delta(spark, table, cfg.delta.engine)
        .where(F.col("classifier_id") == classifier_id)
        .select("id", "label")
        .collect()
    )
    rows.sort(key=lambda r: (0, int(r["id"]), "") if r["id"].isdigit() else (1, 0, r["id"]))
    path = local_path(path)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label"])
        writer.writerows((r["id"], r["label"]) for r in rows)
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser("predict", __doc__.split("\n\n")[0])
    parser.add_argument(
        "--embeddings", default="lake/embeddings", help="embedding table to score (default: %(default)s)"
    )
    parser.add_argument(
        "--classifier",
        default="lake/classifier",
        help="classifier folder from jobs/train.py (default: %(default)s)",
    )
    parser.add_argument(
        "--output", default="lake/predictions", help="Delta table of predictions (default: %(default)s)"
    )
    parser.add_argument("--csv", default=None, help="also write id,label to this CSV file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    def job(args: argparse.Namespace, cfg: Config) -> int:
        spark = get_spark(cfg)
        run(spark, cfg, args.embeddings, args.classifier, args.output, args.csv)
        print(f"predictions: {args.output}" + (f" and {args.csv}" if args.csv else ""))
        print(f"delta engine: {engine_name(spark, cfg.delta.engine)}")
        return 0

    return run_job(build_parser(), argv, job)


if __name__ == "__main__":
    sys.exit(main())
