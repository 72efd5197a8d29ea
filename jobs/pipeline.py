"""The whole pipeline in one command: ingest -> clean -> embed -> train -> predict, plus a report.

    ./spark-submit.sh jobs/pipeline.py [--train LABELLED.csv] [--score UNLABELLED.csv] [--out DIR] [--model MODEL_SPEC]
                                       [--classifier spark|sklearn]

With no arguments it runs on the built-in sample with the project's default ELMo model. It writes
DIR/predictions.csv (id,label for every scored id), DIR/report.json, DIR/report.html and the Delta tables under DIR.
With train.select (the default) the embed stage writes every set of the selection grid (train.select_layers x
train.select_poolings) for the training documents in one pass of the model, train chooses the set and regParam by
CV on the training split, and the score documents are embedded with the chosen set only. Each stage is
incremental (ingest, clean and embed add only what is missing) and training is skipped when its inputs and
settings did not change, so re-running with the same --out reuses the work already done.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs import clean, embed, ingest, predict, train
from jobs.lake.delta_tables import engine_name, read_delta, resolve_engine, snapshot_version, table_exists
from jobs.lake.embedding_sets import embedding_set
from jobs.lake.quarantine import rejects_table_for, warning_line
from jobs.learning.baseline import quality_lines
from jobs.learning.classifier import Classifier, arrow_matrix, arrow_vector
from jobs.learning.report import write_report
from jobs.platform.cli import job_parser, log, run_job
from jobs.platform.config import Config
from jobs.platform.paths import (
    default_model,
    default_sample,
    default_score_sample,
    join,
    local_path,
    spark_path,
)
from jobs.platform.python_workers import kept_warm
from jobs.platform.session import get_spark
from jobs.platform.table_names import check_schema_name, refuse_on_delta_rs, register

# the stages' Delta tables under --out, each of which may have a rejects table beside it
STAGE_TABLES = (
    "train_documents",
    "score_documents",
    "train_clean",
    "score_clean",
    "train_embeddings",
    "score_embeddings",
)


def sample_inputs() -> tuple[str, str]:
    return default_sample(), default_score_sample()


class Stages:
    """Times and row counts per stage, for the progress lines and the report."""

    def __init__(self, total: int = 6):
        self.info: dict[str, dict] = {}
        self.total = total

    def run(self, name: str, action, rows=None, note=None):
        number = len(self.info) + 1
        log("pipeline", f"[{number}/{self.total}] {name} ...")
        start = time.perf_counter()
        result = action()
        seconds = time.perf_counter() - start
        entry = {"seconds": round(seconds, 2)}
        if rows is not None:
            entry["rows"] = rows(result)
        if note is not None:
            entry["note"] = note(result)
        self.info[name] = entry
        log(
            "pipeline",
            f"[{number}/{self.total}] {name} done in {seconds:.1f} s"
            + (f": {entry['note']}" if "note" in entry else ""),
        )
        return result


def train_signature(
    spark: SparkSession, cfg: Config, tables: list[str], engine: str, embedding_set: list[str]
) -> str:
    """What the classifier depends on: train settings, engine, input table versions and the embedding set."""
    versions = [snapshot_version(spark, t, cfg.delta.engine) for t in tables]
    content = json.dumps(
        [cfg.as_dict()["train"], engine, versions, embedding_set],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(content.encode()).hexdigest()[:16]


def quarantine_note(stage: str, summaries) -> str:
    """'' or the stage's warning line for the documents it quarantined (the first table's, then the other's)."""
    lines = [
        warning_line(stage, s.quarantined)
        for s in summaries
        if s and s.quarantined and s.quarantined.documents
    ]
    return "".join(f"; {line}" for line in lines)


def register_tables(spark: SparkSession, cfg: Config, schema: str, tables: dict[str, str]) -> list[str]:
    """``--schema``: each Delta table the pipeline wrote, registered as SCHEMA.<folder name> (an external table
    over DIR/<folder>: descriptions and column comments come from the table itself). Returns the names."""
    if resolve_engine(spark, cfg.delta.engine) != "spark":
        refuse_on_delta_rs(f"{schema}.train_embeddings")
    names = []
    paths = {
        name: path for name, path in tables.items() if name != "classifier"
    }  # the classifier is a folder
    # the stages' rejects tables, beside their outputs (as the stages name them), where a stage wrote one
    for table in STAGE_TABLES:
        paths[f"{table}_rejects"] = rejects_table_for(tables[table])
    for folder, path in paths.items():
        if table_exists(spark, path, cfg.delta.engine):
            register(spark, f"{schema}.{folder}", path)
            names.append(f"{schema}.{folder}")
    return names


def run(
    spark: SparkSession,
    cfg: Config,
    train_csv: str,
    score_csv: str,
    out: str,
    model: str,
    engine: str,
    schema: str | None = None,
) -> dict:
    root = spark_path(out)  # the tables: what Spark sees (dbfs:/..., /Volumes/..., s3://..., a local folder)
    files = Path(local_path(root))  # predictions.csv, the report, the state: written by this process
    t = {name: join(root, name) for name in (*STAGE_TABLES, "classifier", "runs", "predictions")}
    stages = Stages(7 if schema else 6)
    start = time.perf_counter()
    stages.run(
        "ingest",
        lambda: (
            ingest.run(spark, cfg, train_csv, t["train_documents"], rejects_table_for(t["train_documents"])),
            ingest.run(spark, cfg, score_csv, t["score_documents"], rejects_table_for(t["score_documents"])),
        ),
        rows=lambda r: r[0].added + r[0].already_present + r[1].added + r[1].already_present,
        note=lambda r: f"train: {r[0].describe()}; score: {r[1].describe()}",
    )
    stages.run(
        "clean",
        lambda: (
            clean.run(spark, cfg, t["train_documents"], t["train_clean"]),
            clean.run(spark, cfg, t["score_documents"], t["score_clean"]),
        ),
        note=lambda r: (
            f"{r[0].cleaned + r[1].cleaned} documents cleaned ({r[0].empty + r[1].empty} empty)"
            + quarantine_note("clean", r)
        ),
    )
    select = cfg.train.select
    # with train.select the training table gets every set the choice needs (one model pass for all of them),
    # and the score table only the chosen one, after training
    grid = [(layer, pooling) for layer in cfg.train.select_layers for pooling in cfg.train.select_poolings]
    train_sets = grid if select else [(cfg.embed.layer, cfg.embed.pooling)]

    def embed_score(layer: str, pooling: str):
        return embed.run(spark, cfg, t["score_clean"], t["score_embeddings"], model, layer, pooling)

    # From the embed stage's tasks to predict's, train works on the driver for longer than Spark keeps idle
    # Python workers (a minute): kept warm, the embed stage's workers and the model each loaded serve predict's
    # embedding of the score documents too
    with kept_warm(spark):
        embedded = stages.run(
            "embed",
            lambda: (
                embed.run(spark, cfg, t["train_clean"], t["train_embeddings"], model, sets=train_sets),
                None if select else embed_score(cfg.embed.layer, cfg.embed.pooling),
            ),
            note=lambda r: (
                f"{r[0].embedded + (r[1].embedded if r[1] else 0)} documents embedded with "
                f"{r[0].model_id} ({embed.describe_sets(train_sets)})" + quarantine_note("embed", r)
            ),
        )

        state_file = files / "pipeline_state.json"
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        signature = train_signature(
            spark,
            cfg,
            [t["train_embeddings"], t["train_documents"]],
            engine,
            [embedded[0].model_id, *(f"{layer}/{pooling}" for layer, pooling in train_sets)],
        )
        details_file = files / "validation_scores.npz"

        def fit():
            if (
                state.get("train_signature") == signature
                and (Path(local_path(t["classifier"])) / "classifier.json").exists()
                and details_file.exists()
            ):
                saved = np.load(details_file)
                return (
                    Classifier.load(t["classifier"]),
                    {"labels": saved["labels"], "probabilities": saved["probabilities"]},
                    True,
                )
            # this run's set: the tables may also hold sets of earlier runs (another layer, pooling or precision)
            classifier, details = train.run(
                spark,
                cfg,
                t["train_embeddings"],
                t["train_documents"],
                t["classifier"],
                engine,
                t["runs"],
                model_id=embedded[0].model_id,
                layer=None if select else cfg.embed.layer,
                pooling=None if select else cfg.embed.pooling,
                clean=t["train_clean"],
            )
            files.mkdir(parents=True, exist_ok=True)
            np.savez(details_file, **details)
            state["train_signature"] = signature
            state_file.write_text(json.dumps(state))
            return classifier, details, False

        classifier, details, reused = stages.run(
            "train",
            fit,
            note=lambda r: (
                ("reused: inputs unchanged; " if r[2] else "")
                + f"validation F1 {r[0].metrics['validation']['f1']:.3f}"
            ),
        )
        csv_path = str(files / "predictions.csv")

        def score():
            scored = embed_score(classifier.layer, classifier.pooling) if select else embedded[1]
            return scored, predict.run(
                spark, cfg, t["score_embeddings"], t["classifier"], t["predictions"], csv_path
            )

        stages.run(
            "predict",
            score,
            note=lambda r: (
                (
                    f"{r[0].embedded} documents embedded ({classifier.layer}/{classifier.pooling}), "
                    if select
                    else ""
                )
                + f"{r[1]} new predictions"
            ),
        )

    def make_report():
        emb = read_delta(spark, t["train_embeddings"], cfg.delta.engine).where(
            embedding_set(classifier.model_id, classifier.layer, classifier.pooling)
            & F.col("embedding").isNotNull()
        )
        labels = read_delta(spark, t["train_documents"], cfg.delta.engine).select("id", "label")
        sample = emb.join(labels, "id").select("embedding", "label").limit(5000).toArrow()
        points, point_labels = arrow_matrix(sample, "embedding"), arrow_vector(sample, "label")
        report = {
            "classifier_id": classifier.classifier_id,
            "engine": classifier.engine,
            "delta_engine": engine_name(spark, cfg.delta.engine),
            "model_id": classifier.model_id,
            "layer": classifier.layer,
            "pooling": classifier.pooling,
            "threshold": classifier.threshold,
            "metrics": classifier.metrics,
            "stages": stages.info,
            "tables": t,
            "predictions_csv": csv_path,
            "inputs": {"train": train_csv, "score": score_csv, "model": model},
            "settings": cfg.as_dict(),
            "total_seconds": round(time.perf_counter() - start, 2),
        }
        return write_report(
            files,
            report,
            details["labels"],
            details["probabilities"],
            classifier.threshold,
            points,
            point_labels,
        )

    json_path, html_path = stages.run("report", make_report)
    registered = (
        stages.run(
            "register",
            lambda: register_tables(spark, cfg, schema, t),
            note=lambda names: f"{len(names)} tables in schema {schema}: {', '.join(names)}",
        )
        if schema
        else []
    )
    return {
        "registered": registered,
        "classifier": classifier,
        "report_json": json_path,
        "report_html": html_path,
        "predictions_csv": csv_path,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser("pipeline", __doc__.split("\n\n")[0])
    parser.add_argument(
        "--train",
        default=None,
        help="labelled CSV/Parquet/JSON (id, label, text|tweet); default: the built-in sample",
    )
    parser.add_argument(
        "--score", default=None, help="unlabelled file to predict; default: the built-in sample"
    )
    parser.add_argument("--out", default="out/sample", help="output folder (default: %(default)s)")
    parser.add_argument(
        "--schema",
        default=None,
        help="also register each table under this schema by its folder name (lake -> lake.train_embeddings; "
        "catalog.schema on Unity Catalog), for SQL clients and jobs/serve_sql.py",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="ELMo model spec: native folder, TF Hub module folder, file:// URL, TF Hub handle, hdfs:// / dbfs: "
        "path (default: the project's default model)",
    )
    parser.add_argument(
        "--classifier",
        choices=["spark", "sklearn"],
        default=None,
        help="logistic regression engine (default: train.engine)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    def job(args: argparse.Namespace, cfg: Config) -> int:
        train_csv, score_csv = sample_inputs()
        if args.schema:
            check_schema_name(args.schema)
        spark = get_spark(cfg)
        result = run(
            spark,
            cfg,
            args.train or train_csv,
            args.score or score_csv,
            args.out,
            args.model or cfg.embed.model or default_model(),
            args.classifier or cfg.train.engine,
            args.schema,
        )
        for line in quality_lines(result["classifier"].metrics):
            print(line)
        print(f"predictions: {result['predictions_csv']}")
        print(f"report:      {result['report_html']} (figures in {result['report_json']})")
        print(
            f"tables:      {spark_path(args.out)} (Delta, written by {engine_name(spark, cfg.delta.engine)})"
            + (
                f"; registered in schema {args.schema} ({len(result['registered'])} tables)"
                if args.schema
                else ""
            )
        )
        print(
            f"next: open the report, or train on one set of your choice: ./spark-submit.sh jobs/pipeline.py --out "
            f"{args.out} --set train.select=false --set embed.layer=all --classifier spark"
        )
        return 0

    return run_job(build_parser(), argv, job)


if __name__ == "__main__":
    sys.exit(main())
