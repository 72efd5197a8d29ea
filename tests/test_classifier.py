"""Classifier stages: both engines, the driver budget, label and model checks, predictions, and the pipeline."""

from __future__ import annotations

import csv
import datetime as dt
import json
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from jobs import pipeline, predict, train
from jobs.learning.classifier import DriverBudgetError
from jobs.platform.config import load_config
from jobs.platform.errors import InputError
from tests.conftest import ROOT

DIM = 8


def cfg_with(*overrides):
    """Fixed training (no model selection, no baseline) unless the overrides say otherwise."""
    return load_config(
        "local", ["delta.engine=delta-rs", "train.tfidf_baseline=false", "train.select=false", *overrides]
    )


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
    write_tables.features = x
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
    assert (
        report["metrics"]["tfidf_baseline"]["text"] == "clean tokens"
    )  # the pipeline passes its clean table
    assert report["metrics"]["comparison"]["verdict"] in (
        "embeddings better",
        "baseline better",
        "no clear winner",
    )
    assert "bootstrap interval" in result["report_html"].read_text()
    # train.select (the default): every set of the grid embedded for training, only the chosen one for scoring
    selection = report["metrics"]["selection"]
    assert len(selection["cv"]) == 6 * len(selection["grid"]) and selection["folds"] == 3
    chosen = selection["chosen"]
    assert (report["layer"], report["pooling"]) == (chosen["layer"], chosen["pooling"])
    train_sets = {
        (r["layer"], r["pooling"])
        for r in DeltaTable(result_table(tmp_path, "train")).to_pyarrow_table().to_pylist()
    }
    assert train_sets == {
        (layer, pooling) for layer in ("elmo", "all") for pooling in ("mean", "max", "mean_max")
    }
    score_sets = {
        (r["layer"], r["pooling"])
        for r in DeltaTable(result_table(tmp_path, "score")).to_pyarrow_table().to_pylist()
    }
    assert score_sets == {(chosen["layer"], chosen["pooling"])}
    assert "Model selection" in result["report_html"].read_text()
    for png in ("confusion_matrix.png", "precision_recall.png", "embeddings_pca.png"):
        assert (tmp_path / "out" / png).stat().st_size > 1000
    assert "<img" in result["report_html"].read_text()

    again = pipeline.run(spark, cfg, train_csv, score_csv, str(tmp_path / "out"), model, "sklearn")
    report = json.loads(again["report_json"].read_text())
    assert report["stages"]["train"]["note"].startswith("reused")
    assert "0 new predictions" in report["stages"]["predict"]["note"]


def result_table(tmp_path, which):
    return str(tmp_path / "out" / f"{which}_embeddings")


def add_set(path, layer, pooling, x, ids=None, model_id="elmo-test"):
    """Another (layer, pooling) set of vectors ``x`` (rows in id order) in the embedding table at ``path``."""
    ids = ids if ids is not None else [str(i) for i in range(len(x))]
    n = len(ids)
    table = pa.table(
        {
            "id": ids,
            "embedding": pa.array([list(map(float, x[int(i)])) for i in ids], pa.list_(pa.float32())),
            "token_embeddings": pa.array([None] * n, pa.list_(pa.list_(pa.float32()))),
            "dim": pa.array([x.shape[1]] * n, pa.int32()),
            "layer": [layer] * n,
            "pooling": [pooling] * n,
            "model_id": [model_id] * n,
            "created_at": pa.array([dt.datetime(2026, 1, 1)] * n, pa.timestamp("us", tz="UTC")),
        }
    )
    write_deltalake(path, table, partition_by=["model_id"], mode="append")


def test_selection_chooses_the_set_and_regularisation_by_cv_on_both_engines(spark, tmp_path):
    emb, docs = write_tables(tmp_path, n=240)
    informative = write_tables.features
    noise = np.random.default_rng(5).standard_normal((240, 2 * DIM)).astype(np.float32)
    add_set(emb, "all", "mean", noise)  # a set that carries no signal: CV must not pick it
    add_set(emb, "lstm_outputs2", "mean", informative)  # outside train.select_layers: never a candidate
    cfg = cfg_with("train.select=true", "train.select_grid=[0.01, 1.0]", "train.folds=2")
    chosen = {}
    for engine in ("sklearn", "spark"):
        classifier, _ = train.run(spark, cfg, emb, docs, str(tmp_path / engine), engine)
        selection = classifier.metrics["selection"]
        assert {(r["layer"], r["pooling"]) for r in selection["cv"]} == {("elmo", "mean"), ("all", "mean")}
        train_rows = classifier.metrics["validation"]["train_rows"]
        assert len(selection["cv"]) == 4 and all(r["rows"] == train_rows for r in selection["cv"])
        assert (classifier.layer, classifier.pooling) == ("elmo", "mean") and len(classifier.weights) == DIM
        assert classifier.reg_param == selection["chosen"]["reg_param"] in (0.01, 1.0)
        noise_f1 = max(r["f1"] for r in selection["cv"] if r["layer"] == "all")
        assert selection["chosen"]["f1"] > 0.8 > noise_f1 + 0.1
        saved = json.loads((tmp_path / engine / "classifier.json").read_text())
        assert saved["layer"] == "elmo" and saved["metrics"]["selection"]["chosen"] == selection["chosen"]
        chosen[engine] = {(r["layer"], r["pooling"], r["reg_param"]): r for r in selection["cv"]}
        assert selection["metric"] == "log_loss"
    # the same folds and objective: the engines' fold F1s and log losses agree
    for cell, row in chosen["sklearn"].items():
        assert abs(row["f1"] - chosen["spark"][cell]["f1"]) <= 0.03, cell
        assert abs(row["log_loss"] - chosen["spark"][cell]["log_loss"]) <= 0.01, cell

    from jobs.learning.report import cv_table

    html = cv_table(selection)
    assert "Model selection" in html and html.count("<b>") == 1 and "all / mean" in html


def test_selection_explains_what_it_cannot_choose_from(spark, tmp_path):
    emb, docs = write_tables(tmp_path / "a", n=60)  # only elmo/mean
    cfg = cfg_with("train.select=true", "train.select_grid=[0.01]", "train.folds=2")
    with pytest.raises(InputError, match="no embedding set to select from: layers all x poolings mean_max"):
        train.run(spark, cfg, emb, docs, str(tmp_path / "c"), "sklearn", layer="all", pooling="mean_max")
    half = [str(i) for i in range(30)]  # a set embedded for part of the documents only
    add_set(emb, "elmo", "max", write_tables.features, ids=half)
    with pytest.raises(InputError, match="the embedding sets cover different training rows"):
        train.run(spark, cfg, emb, docs, str(tmp_path / "c"), "sklearn")
    with pytest.raises(DriverBudgetError, match="use --engine spark"):  # refused before anything is collected
        train.run(
            spark,
            cfg_with("train.select=true", "train.driver_budget_mb=0"),
            emb,
            docs,
            str(tmp_path / "d"),
            "sklearn",
        )


@contextmanager
def sql_settings(spark, **settings: str):
    """The session's SQL settings changed while the block runs, then put back."""
    before = {key: spark.conf.get(key) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            spark.conf.set(key, value)


def test_the_spark_engine_cross_validates_a_grid_alike_whatever_the_partitioning(spark, tmp_path):
    """train.grid on the Spark engine deals its folds by a seeded hash of the id (fold_column), so the regParam it
    chooses and the weights do not follow the input's partitions. With CrossValidator's own folds (a random number
    per row, drawn partition by partition) adaptive execution off and 7 shuffle partitions chose 1.0 here, and F1
    fell from above 0.5 to 0.22."""
    emb, docs = write_tables(tmp_path, n=200)
    cfg = cfg_with("train.grid=[0.001, 1.0]", "train.folds=2")
    fitted = []
    for adaptive, partitions in (("true", "4"), ("false", "7")):
        with sql_settings(
            spark, **{"spark.sql.adaptive.enabled": adaptive, "spark.sql.shuffle.partitions": partitions}
        ):
            fitted.append(train.run(spark, cfg, emb, docs, str(tmp_path / partitions), "spark")[0])
    first, second = fitted
    assert first.reg_param == second.reg_param == 0.001
    assert first.metrics["validation"]["f1"] > 0.5
    assert abs(second.metrics["validation"]["f1"] - first.metrics["validation"]["f1"]) <= 1e-9
    np.testing.assert_allclose(second.weights, first.weights, atol=1e-4, rtol=1e-3)


def word_texts(labels, seed=0):
    """Texts whose words carry the label (with noise): 'bad'/'awful' lean 1, 'good'/'great' lean 0."""
    rng = np.random.default_rng(seed)
    filler = ["the", "phone", "battery", "screen", "today", "my", "new", "is", "so", "and"]
    texts = []
    for label in labels:
        lean = (
            ["bad", "awful", "broken"] if (label == 1) != (rng.random() < 0.1) else ["good", "great", "love"]
        )
        words = list(rng.choice(filler, 6)) + list(rng.choice(lean, 2))
        rng.shuffle(words)
        texts.append(" ".join(words))
    return texts


def test_the_honest_baseline_chooses_its_regularisation_by_cv_on_both_engines(spark):
    from jobs.learning.baseline import tfidf_baseline

    n = 300
    labels = (np.arange(n) % 3 == 0).astype(int)
    rows = [
        {"id": f"d{i:03d}", "text": t, "label": int(y)}
        for i, (t, y) in enumerate(zip(word_texts(labels), labels, strict=True))
    ]
    frame = spark.createDataFrame(rows, "id string, text string, label int")
    train_rows, validation = frame.where("id < 'd240'"), frame.where("id >= 'd240'")
    grid = [1e-3, 1.0]  # small: each Spark ML fit takes seconds here (a job per optimiser iteration)
    results = {}
    for engine in ("sklearn", "spark"):
        result = tfidf_baseline(train_rows, validation, engine, grid, folds=2, seed=7, clean_text=True)
        assert result["reg_param"] in grid and [c["reg_param"] for c in result["cv"]] == grid
        assert result["rows"] == 60 and result["scores"]["ids"] == sorted(r["id"] for r in rows[240:])
        low, high = result["f1_interval"]
        assert low <= result["f1"] <= high and result["f1"] > 0.7
        assert result["text"] == "clean tokens" and result["folds"] == 2
        assert result["features"] == (1 << 18 if engine == "spark" else None)  # train.tfidf_features' default
        results[engine] = result
    # the same features (up to hashing), folds, grid and objective: the engines agree
    assert abs(results["sklearn"]["f1"] - results["spark"]["f1"]) <= 0.05


def test_bootstrap_intervals_and_the_paired_comparison():
    from jobs.learning.baseline import bootstrap_f1, compare

    rng = np.random.default_rng(0)
    labels = (rng.random(2000) < 0.3).astype(int)
    good = np.where(rng.random(2000) < 0.9, labels, 1 - labels).astype(float)  # right 90 % of the time
    poor = np.where(rng.random(2000) < 0.7, labels, 1 - labels).astype(float)
    from sklearn.metrics import f1_score

    low, high = bootstrap_f1(labels, good)
    narrow = high - low
    assert low < f1_score(labels, good >= 0.5) < high and narrow < 0.06
    small_low, small_high = bootstrap_f1(labels[:200], good[:200])
    assert small_high - small_low > narrow  # fewer rows, wider interval
    assert compare(labels, good, poor)["verdict"] == "embeddings better"
    assert compare(labels, poor, good)["verdict"] == "baseline better"
    same = compare(labels[:300], good[:300], good[:300].copy())
    assert same["f1_difference"] == 0 and same["verdict"] == "no clear winner"


def test_train_reports_f1_with_its_interval_beside_the_baseline(spark, tmp_path):
    emb, docs = write_tables(tmp_path, n=240)
    table = DeltaTable(docs).to_pyarrow_table()
    texts = word_texts(table.column("label").to_pylist())
    write_deltalake(docs, table.set_column(1, "text", pa.array(texts)), mode="overwrite")
    classifier, _ = train.run(
        spark,
        load_config("local", ["delta.engine=delta-rs", "train.tfidf_grid=[0.001, 0.1]"]),
        emb,
        docs,
        str(tmp_path / "c"),
        "sklearn",
    )
    m = classifier.metrics
    assert m["validation"]["f1_interval"][0] <= m["validation"]["f1"] <= m["validation"]["f1_interval"][1]
    assert m["tfidf_baseline"]["text"] == "raw text" and "scores" not in m["tfidf_baseline"]
    assert m["comparison"]["rows"] == m["validation"]["rows"]
    from jobs.learning.baseline import quality_lines

    lines = quality_lines(m)  # train.select is on by default: the choice comes first
    assert lines[0].startswith("embedding set selected: layer elmo, pooling mean, regParam ")
    assert "chosen from 1 embedding set x 6 regParam values by 3-fold CV" in lines[0]
    assert lines[1].startswith("F1 on the validation split:") and "95 % bootstrap interval" in lines[1]
    assert lines[2].startswith("honest baseline (TF-IDF word 1-2-grams of the raw text")
    assert lines[3].startswith("embeddings - baseline:")
    saved = json.loads((tmp_path / "c" / "classifier.json").read_text())
    assert saved["metrics"]["comparison"]["verdict"] == m["comparison"]["verdict"]


def test_the_selection_rules():
    from jobs.learning.selection import choose

    def cell(layer, dim, reg, f1, sd=0.012):
        return {"layer": layer, "pooling": "mean", "dim": dim, "reg_param": reg, "f1": f1, "f1_sd": sd}

    cv = [
        cell("elmo", 256, 0.01, 0.780),
        cell("elmo", 256, 0.1, 0.788),  # within one s.e. (0.012 / sqrt 3 = 0.0069) of the best, and simplest
        cell("all", 768, 0.1, 0.794),  # the best mean
        cell("all", 768, 1.0, 0.790),
    ]
    assert choose(cv, "best", 3, "f1") == cv[2]
    assert choose(cv, "one_se", 3, "f1") == cv[1]
    assert (
        choose([*cv, cell("elmo", 256, 0.3, 0.7875)], "one_se", 3, "f1")["reg_param"] == 0.3
    )  # stronger wins
    assert (
        choose(
            [cell("all", 768, 0.1, 0.8, sd=0.0), cell("elmo", 256, 0.1, 0.799, sd=0.0)], "one_se", 3, "f1"
        )["layer"]
        == "all"
    )  # folds that agree leave no room: the best it is
    with pytest.raises(InputError, match="train.select_rule 'median' is not one of one_se, best"):
        choose(cv, "median", 3, "f1")
    with pytest.raises(InputError, match="train.select_metric 'auc' is not one of log_loss, f1"):
        choose(cv, "best", 3, "auc")

    # log loss: lower is better, and the default metric
    def lossy(layer, dim, reg, loss, sd=0.006):
        return {
            "layer": layer,
            "pooling": "mean",
            "dim": dim,
            "reg_param": reg,
            "log_loss": loss,
            "log_loss_sd": sd,
        }

    cv = [
        lossy("elmo", 256, 0.01, 0.430),
        lossy("elmo", 256, 0.1, 0.414),  # within one s.e. (0.006 / sqrt 3 = 0.0035) of the best, and simplest
        lossy("all", 768, 0.1, 0.411),  # the lowest mean loss
        lossy("all", 768, 1.0, 0.425),
    ]
    assert choose(cv, "best", 3) == cv[2]
    assert choose(cv, "one_se", 3) == cv[1]
    assert choose([*cv[:1], *cv[2:]], "one_se", 3) == cv[2]  # nothing simpler close enough


def test_log_loss_is_scikit_learns():
    from sklearn.metrics import log_loss as sk_log_loss

    from jobs.learning.selection import log_loss

    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.1, 0.8, 0.0, 0.4, 1.0])  # 0 for a positive: clipped, not infinite
    assert abs(log_loss(y, p) - sk_log_loss(y, np.clip(p, 1e-15, 1 - 1e-15))) < 1e-12
