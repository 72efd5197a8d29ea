"""Classifier stages: both engines, the driver budget, label and model checks, predictions, and the pipeline."""

from __future__ import annotations

import csv
import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from jobs import pipeline, predict, train
from jobs.classifier import DriverBudgetError
from jobs.config import load_config
from jobs.errors import InputError
from tests.conftest import ROOT

DIM = 8


def cfg_with(*overrides):
    return load_config("local", ["delta.engine=delta-rs", "train.tfidf_baseline=false", *overrides])


def write_tables(tmp_path, n=300, model_id="elmo-test", labels=None, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.3 * rng.standard_normal(n) > 0.3).astype(int)
    ids = [str(i) for i in range(n)]
    emb = pa.table(
        {
            "id": ids,
            "embedding": pa.array([list(map(float, v)) for v in x], pa.list_(pa.float32())),
            "token_embeddings": pa.array([None] * n, pa.list_(pa.list_(pa.float32()))),
            "dim": pa.array([DIM] * n, pa.int32()),
            "layer": ["elmo"] * n,
            "pooling": ["mean"] * n,
            "model_id": [model_id] * n,
            "created_at": pa.array([dt.datetime(2026, 1, 1)] * n, pa.timestamp("us", tz="UTC")),
        }
    )
    write_deltalake(str(tmp_path / "emb"), emb, partition_by=["model_id"], mode="append")
    docs = pa.table(
        {
            "id": ids,
            "text": [f"text {i}" for i in ids],
            "label": pa.array(labels if labels is not None else y, pa.int32()),
        }
    )
    write_deltalake(str(tmp_path / "docs"), docs, mode="overwrite")
    return str(tmp_path / "emb"), str(tmp_path / "docs")


def test_both_engines_agree_and_record_their_runs(spark, tmp_path):
    emb, docs = write_tables(tmp_path)
    results = {}
    for engine in ("spark", "sklearn"):
        classifier, _ = train.run(
            spark, cfg_with("train.reg_param=0.01"), emb, docs, str(tmp_path / engine), engine
        )
        results[engine] = classifier.metrics["validation"]
        saved = json.loads((tmp_path / engine / "classifier.json").read_text())
        assert saved["model_id"] == "elmo-test" and saved["engine"] == engine and len(saved["weights"]) == DIM
        for key in ("f1", "precision", "recall", "roc_auc", "pr_auc", "best_threshold"):
            assert results[engine][key] is not None
    assert results["spark"]["f1"] > 0.8
    assert abs(results["spark"]["f1"] - results["sklearn"]["f1"]) <= 0.01
    assert results["spark"]["rows"] == results["sklearn"]["rows"] == 60  # a stratified 20 %
    runs = DeltaTable(str(tmp_path / "runs")).to_pyarrow_table().to_pylist()
    assert sorted(r["engine"] for r in runs) == ["sklearn", "spark"]


def test_the_sklearn_engine_refuses_what_the_driver_cannot_hold(spark, tmp_path):
    emb, docs = write_tables(tmp_path)
    with pytest.raises(DriverBudgetError, match="use --engine spark"):
        train.run(spark, cfg_with("train.driver_budget_mb=0"), emb, docs, str(tmp_path / "c"), "sklearn")


def test_labels_other_than_0_or_1_are_refused(spark, tmp_path):
    emb, docs = write_tables(tmp_path, n=20, labels=[0, 1, 2] + [0, 1] * 8 + [1])
    with pytest.raises(InputError, match="labels must be 0 or 1; found other values \\(id 2: 2\\)"):
        train.run(spark, cfg_with(), emb, docs, str(tmp_path / "c"), "sklearn")


def test_predictions_cover_every_id_once_rerun_adds_nothing_and_models_must_match(spark, tmp_path):
    emb, docs = write_tables(tmp_path)
    train.run(spark, cfg_with(), emb, docs, str(tmp_path / "c"), "sklearn")
    out, csv_path = str(tmp_path / "pred"), str(tmp_path / "pred.csv")
    assert predict.run(spark, cfg_with(), emb, str(tmp_path / "c"), out, csv_path) == 300
    assert predict.run(spark, cfg_with(), emb, str(tmp_path / "c"), out, csv_path) == 0
    rows = DeltaTable(out).to_pyarrow_table().to_pylist()
    assert sorted(int(r["id"]) for r in rows) == list(range(300))
    with open(csv_path, newline="") as f:
        written = list(csv.DictReader(f))
    assert [r["id"] for r in written] == [str(i) for i in range(300)] and {r["label"] for r in written} == {
        "0",
        "1",
    }

    other = tmp_path / "other"
    other.mkdir()
    other_emb, _ = write_tables(other, model_id="elmo-another")
    with pytest.raises(
        InputError, match="no embeddings from the classifier's model elmo-test .* found: elmo-another"
    ):
        predict.run(spark, cfg_with(), other_emb, str(tmp_path / "c"), str(tmp_path / "pred2"))


@pytest.mark.slow
def test_the_pipeline_on_the_built_in_sample_and_its_rerun(spark, tmp_path):
    fixture = ROOT.parent / "shared" / "fixtures" / "bilm-tf"
    model = (
        str(fixture)
        if not (ROOT / "models" / "elmo-tweets-small").exists()
        else str(ROOT / "models" / "elmo-tweets-small")
    )
    train_csv, score_csv = pipeline.sample_inputs()
    cfg = load_config("local", ["delta.engine=delta-rs"])
    result = pipeline.run(spark, cfg, train_csv, score_csv, str(tmp_path / "out"), model, "sklearn")
    with open(result["predictions_csv"], newline="") as f:
        predicted = list(csv.DictReader(f))
    with open(score_csv, newline="", encoding="utf-8") as f:
        expected = [r["id"] for r in csv.DictReader(f)]
    assert sorted(r["id"] for r in predicted) == sorted(expected)
    report = json.loads(result["report_json"].read_text())
    assert {"ingest", "clean", "embed", "train", "predict"} <= set(report["stages"])
    assert (
        report["metrics"]["validation"]["f1"] is not None
        and report["metrics"]["tfidf_baseline"]["f1"] is not None
    )
    for png in ("confusion_matrix.png", "precision_recall.png", "embeddings_pca.png"):
        assert (tmp_path / "out" / png).stat().st_size > 1000
    assert "<img" in result["report_html"].read_text()

    again = pipeline.run(spark, cfg, train_csv, score_csv, str(tmp_path / "out"), model, "sklearn")
    report = json.loads(again["report_json"].read_text())
    assert report["stages"]["train"]["note"].startswith("reused")
    assert "0 new predictions" in report["stages"]["predict"]["note"]


def test_the_spark_engine_cross_validates_a_grid(spark, tmp_path):
    emb, docs = write_tables(tmp_path, n=200)
    classifier, _ = train.run(
        spark, cfg_with("train.grid=[0.001, 1.0]", "train.folds=2"), emb, docs, str(tmp_path / "c"), "spark"
    )
    assert classifier.reg_param in (0.001, 1.0) and classifier.metrics["validation"]["f1"] > 0.5
