"""Train job: an embedding table + labels -> a logistic-regression classifier, its metrics and a run record.

    ./spark-submit.sh jobs/train.py --embeddings EMB_TABLE --labels DOCS_TABLE --output CLASSIFIER_DIR
                                    [--engine spark|sklearn] [--runs RUNS_TABLE]

Joins the embeddings with the documents' 0/1 labels, splits train/validation (stratified, seeded; 20 %
validation by default), chooses the embedding set (layer x pooling of one model_id) and regParam by k-fold CV on
the training split (train.select, on by default; jobs/learning/selection.py; train.select=false trains on the one set
--model-id/--layer/--pooling name with train.reg_param), fits logistic regression with Spark ML (scales out) or
scikit-learn on the driver (refused when the features would not fit the driver budget), and reports F1,
precision, recall, ROC AUC, PR AUC and the F1-best threshold on the validation split, with a 95 % bootstrap
interval on F1, beside the honest baseline on the same split (TF-IDF word 1-2-grams, sublinear tf,
regularisation chosen by k-fold CV on the training split; jobs/learning/baseline.py) and the paired interval of their
difference. Saves CLASSIFIER_DIR/classifier.json (with the CV table) and appends a row to the runs table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import posixpath
import sys
import time
from collections.abc import Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.lake.delta_tables import commit_metadata, engine_name, read_delta, write_delta
from jobs.lake.embedding_sets import embedding_set
from jobs.learning.baseline import bootstrap_f1, compare, quality_lines, tfidf_baseline
from jobs.learning.classifier import (
    Classifier,
    arrow_vector,
    binary_metrics,
    check_labels,
    fit_sklearn,
    fit_spark,
    fold_column,
    stratified_split,
)
from jobs.learning.selection import candidate_sets, choose, cross_validate
from jobs.learning.selection import describe as selection_describe
from jobs.platform.cli import job_parser, log, run_job
from jobs.platform.config import Config
from jobs.platform.errors import InputError
from jobs.platform.paths import join, spark_path
from jobs.platform.session import get_spark, release, reuse

RUNS_DESCRIPTION = (
    "elmo-lake classifier runs: one row per jobs/train.py run, with its validation metrics and lineage"
)


def embedding_keys(emb: DataFrame) -> list[dict]:
    """(model_id, layer, pooling, dim) of every set in an embedding table."""
    return [r.asDict() for r in emb.select("model_id", "layer", "pooling", "dim").distinct().collect()]


def select_embeddings(
    emb: DataFrame, model_id: str | None, layer: str | None, pooling: str | None
) -> tuple[DataFrame, dict]:
    """The rows of the one (model_id, layer, pooling) set of an embedding table, or a clear error."""
    key = one_set(embedding_keys(emb), model_id, layer, pooling)
    return emb.where(embedding_set(key["model_id"], key["layer"], key["pooling"])), key


def one_set(keys: list[dict], model_id: str | None, layer: str | None, pooling: str | None) -> dict:
    """The one pooled (model_id, layer, pooling) set among ``keys`` that the filters leave, or a clear error."""
    chosen = [
        k
        for k in keys
        if (model_id in (None, k["model_id"]))
        and (layer in (None, k["layer"]))
        and (pooling in (None, k["pooling"]))
    ]
    chosen = [k for k in chosen if k["pooling"] != "none"]
    if len(chosen) != 1:
        found = "; ".join(f"{k['model_id']} {k['layer']} {k['pooling']}" for k in keys) or "none"
        raise InputError(
            f"choose one pooled embedding set with --model-id/--layer/--pooling (found: {found})"
            if chosen
            else f"no pooled embeddings match (found: {found})"
        )
    return chosen[0]


def labelled_documents(spark: SparkSession, cfg: Config, labels: str, clean: str | None = None) -> DataFrame:
    """(id, label, text) of the labelled documents; text is the clean tokens joined by spaces when a clean table
    is given (what the embeddings saw), else the documents' raw text (the baseline reads it)."""
    engine = cfg.delta.engine
    docs = read_delta(spark, labels, engine)
    for column in ("id", "label"):
        if column not in docs.columns:
            raise InputError(f"{labels} has no {column!r} column (columns: {docs.columns})")
    text = F.col("text") if "text" in docs.columns else F.lit(None).cast("string")
    labelled = docs.where(F.col("label").isNotNull()).select("id", "label", text.alias("text"))
    check_labels(labelled)
    if clean is not None:
        tokens = read_delta(spark, clean, engine).select(
            "id", F.array_join("tokens", " ").alias("clean_text")
        )
        labelled = labelled.join(tokens, "id", "left").select(
            "id", "label", F.coalesce("clean_text", F.lit("")).alias("text")
        )
    return labelled


def select_set(
    cfg: Config, emb: DataFrame, split: DataFrame, candidates: list[dict], engine: str
) -> tuple[dict, dict]:
    """train.select: the candidate set and regParam that train.select_rule picks (ranked by train.select_metric)
    from the k-fold CV table of the training split; returns the set's key and the selection record (grid, CV
    table, choice, rule, metric)."""
    t = cfg.train
    log(
        "train",
        f"selecting among {len(candidates)} embedding set{'s' if len(candidates) > 1 else ''} x "
        f"{len(t.select_grid)} regParam values by "
        f"{t.folds}-fold CV on the training split ({engine} engine)",
    )
    train_folds = split.where(~F.col("is_validation")).select(
        "id", "label", fold_column(t.folds, t.seed).alias("fold")
    )
    cv = cross_validate(
        train_folds,
        emb,
        candidates,
        list(t.select_grid),
        t.folds,
        engine,
        t.driver_budget_mb,
        lambda message: log("train", message),
    )
    best = choose(cv, t.select_rule, t.folds, t.select_metric)
    key = next(k for k in candidates if (k["layer"], k["pooling"]) == (best["layer"], best["pooling"]))
    selection = {
        "folds": t.folds,
        "grid": sorted(float(g) for g in t.select_grid),
        "cv": cv,
        "chosen": best,
        "rule": t.select_rule,
        "metric": t.select_metric,
        "engine": engine,
    }
    log("train", f"selected {selection_describe(selection)}")
    return key, selection


def train_classifier(
    spark: SparkSession,
    cfg: Config,
    embeddings: str,
    labels: str,
    engine: str,
    key_filter: dict,
    clean: str | None = None,
) -> tuple[Classifier, dict]:
    t = cfg.train
    emb = read_delta(spark, embeddings, cfg.delta.engine)
    keys = embedding_keys(emb)
    if t.select:
        candidates = candidate_sets(keys, **key_filter, layers=t.select_layers, poolings=t.select_poolings)
    else:
        candidates = [one_set(keys, **key_filter)]
    labelled = labelled_documents(spark, cfg, labels, clean)
    # the split: labelled documents with a row in any candidate set (every set should hold the same documents;
    # cross_validate says so when one does not)
    in_a_set = F.lit(False)
    for k in candidates:
        in_a_set = in_a_set | embedding_set(k["model_id"], k["layer"], k["pooling"])
    ids = emb.where(in_a_set).select("id").distinct()
    split = reuse(stratified_split(labelled.join(ids, "id"), t.validation_fraction, t.seed))
    try:
        selection = None
        if t.select:
            key, selection = select_set(cfg, emb, split, candidates, engine)
        else:
            key = candidates[0]
        vectors = emb.where(embedding_set(key["model_id"], key["layer"], key["pooling"])).select(
            "id", "embedding"
        )
        rows = split.join(vectors, "id")
        train = rows.where(~F.col("is_validation") & F.col("embedding").isNotNull())
        validation = rows.where(F.col("is_validation"))
        n_train, n_valid = train.count(), validation.count()
        if n_train < 2 or n_valid < 1 or train.select("label").distinct().count() < 2:
            raise InputError(
                f"too few labelled rows to train ({n_train} train, {n_valid} validation, both labels needed)"
            )
        log(
            "train",
            f"{n_train} training and {n_valid} validation rows ({key['model_id']}, {key['layer']}, {key['pooling']}), engine {engine}",
        )
        start = time.perf_counter()
        reg = selection["chosen"]["reg_param"] if selection else t.reg_param
        if engine == "sklearn":
            weights, intercept = fit_sklearn(train, n_train, key["dim"], reg, t.driver_budget_mb)
        else:
            grid = [] if selection else list(t.grid)
            weights, intercept, reg = fit_spark(train, reg, grid, t.folds, t.seed, n_train)
        fit_seconds = time.perf_counter() - start
        classifier = Classifier(
            weights=[float(w) for w in weights],
            intercept=intercept,
            threshold=0.5,
            model_id=key["model_id"],
            layer=key["layer"],
            pooling=key["pooling"],
            engine=engine,
            reg_param=reg,
            settings=cfg.as_dict()["train"],
        )
        scored = (
            validation.select("id", "label", classifier.probability(F.col("embedding")).alias("p"))
            .orderBy("id")
            .toArrow()
        )
        labels_v, probs_v = arrow_vector(scored, "label", int), arrow_vector(scored, "p")
        metrics = binary_metrics(labels_v, probs_v)
        metrics["f1_interval"] = bootstrap_f1(labels_v, probs_v, seed=t.seed)
        metrics["train_rows"], metrics["fit_seconds"] = n_train, round(fit_seconds, 2)
        if t.use_best_threshold:
            classifier.threshold = metrics["best_threshold"]
        baseline, comparison = None, None
        if t.tfidf_baseline:
            log(
                "train", f"honest baseline: TF-IDF 1-2-grams, regParam by {t.folds}-fold CV ({engine} engine)"
            )
            baseline = tfidf_baseline(
                rows.where(~F.col("is_validation")),
                validation,
                engine,
                list(t.tfidf_grid),
                t.folds,
                t.seed,
                clean_text=clean is not None,
                features=t.tfidf_features,
            )
            scores = baseline.pop("scores")
            if scores["ids"] == scored.column("id").to_pylist():  # the same rows, in the same order
                comparison = compare(labels_v, probs_v, scores["probabilities"], seed=t.seed)
        classifier.metrics = {
            "validation": metrics,
            "tfidf_baseline": baseline,
            "comparison": comparison,
            "selection": selection,
        }
        details = {"labels": labels_v, "probabilities": probs_v}
        return classifier, details
    finally:
        release(split)


def record_run(
    spark: SparkSession, cfg: Config, runs_table: str, classifier: Classifier, output: str
) -> None:
    m = classifier.metrics["validation"]
    baseline = classifier.metrics.get("tfidf_baseline") or {}
    row = {
        "run_at": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None),
        "classifier_id": classifier.classifier_id,
        "classifier_path": spark_path(output),
        "engine": classifier.engine,
        "model_id": classifier.model_id,
        "layer": classifier.layer,
        "pooling": classifier.pooling,
        "reg_param": float(classifier.reg_param),
        "train_rows": int(m["train_rows"]),
        "validation_rows": int(m["rows"]),
        "f1": m["f1"],
        "precision": m["precision"],
        "recall": m["recall"],
        "roc_auc": m["roc_auc"],
        "pr_auc": m["pr_auc"],
        "best_threshold": m["best_threshold"],
        "tfidf_f1": baseline.get("f1"),
        "settings": json.dumps(classifier.settings, sort_keys=True),
    }
    schema = (
        "run_at timestamp, classifier_id string, classifier_path string, engine string, model_id string, layer string, "
        "pooling string, reg_param double, train_rows long, validation_rows long, f1 double, precision double, "
        "recall double, roc_auc double, pr_auc double, best_threshold double, tfidf_f1 double, settings string"
    )
    write_delta(
        spark.createDataFrame([row], schema),
        runs_table,
        mode="append",
        engine=cfg.delta.engine,
        description=RUNS_DESCRIPTION,
        user_metadata=commit_metadata(
            "train", classifier_id=classifier.classifier_id, model_id=classifier.model_id
        ),
    )


def run(
    spark: SparkSession,
    cfg: Config,
    embeddings: str,
    labels: str,
    output: str,
    engine: str | None = None,
    runs_table: str | None = None,
    model_id: str | None = None,
    layer: str | None = None,
    pooling: str | None = None,
    clean: str | None = None,
):
    engine = engine or cfg.train.engine
    classifier, details = train_classifier(
        spark,
        cfg,
        embeddings,
        labels,
        engine,
        {"model_id": model_id, "layer": layer, "pooling": pooling},
        clean,
    )
    classifier.save(output)
    runs_table = runs_table or join(posixpath.dirname(spark_path(output).rstrip("/")), "runs")
    record_run(spark, cfg, runs_table, classifier, output)
    return classifier, details


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser("train", __doc__.split("\n\n")[0])
    parser.add_argument(
        "--embeddings", default="lake/embeddings", help="embedding table (default: %(default)s)"
    )
    parser.add_argument(
        "--labels", default="lake/documents", help="documents table with 0/1 labels (default: %(default)s)"
    )
    parser.add_argument(
        "--output", default="lake/classifier", help="classifier folder (default: %(default)s)"
    )
    parser.add_argument("--engine", choices=["spark", "sklearn"], default=None, help="default: train.engine")
    parser.add_argument("--runs", default=None, help="Delta table of runs (default: OUTPUT/../runs)")
    parser.add_argument("--model-id", default=None, help="which model's embeddings, if the table has several")
    parser.add_argument(
        "--layer",
        default=None,
        help="which layer's embeddings (with train.select: only this layer's sets are candidates)",
    )
    parser.add_argument(
        "--pooling",
        default=None,
        help="which pooling (with train.select: only this pooling's sets are candidates)",
    )
    parser.add_argument(
        "--clean",
        default=None,
        help="clean table (jobs/clean.py): the TF-IDF baseline reads its tokens, as the embeddings did "
        "(default: the documents' raw text)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    def job(args: argparse.Namespace, cfg: Config) -> int:
        spark = get_spark(cfg)
        classifier, _ = run(
            spark,
            cfg,
            args.embeddings,
            args.labels,
            args.output,
            args.engine,
            args.runs,
            args.model_id,
            args.layer,
            args.pooling,
            args.clean,
        )
        m = classifier.metrics["validation"]
        log(
            "train",
            f"validation F1 {m['f1']:.3f} (precision {m['precision']:.3f}, recall {m['recall']:.3f}, ROC AUC "
            f"{m['roc_auc']}, PR AUC {m['pr_auc']}); F1-best threshold {m['best_threshold']:.3f} -> F1 {m['best_threshold_f1']}",
        )
        for line in quality_lines(classifier.metrics):
            print(line)
        print(f"classifier: {spark_path(args.output)} ({classifier.classifier_id})")
        print(f"delta engine: {engine_name(spark, cfg.delta.engine)}")
        return 0

    return run_job(build_parser(), argv, job)


if __name__ == "__main__":
    sys.exit(main())
