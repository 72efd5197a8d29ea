"""Every stage over a real Spark Connect server, as Databricks serverless and Databricks Connect users run them.

The server is pyspark's own (started on 127.0.0.1 by jobs/connect_server.py, as the README says), its Python
workers on this environment but without this checkout on their path, so the UDFs only work if the jobs send their
code and the model as Spark Connect artifacts. Results must equal the classic run's.

Creating a Connect client in a process switches pyspark into Connect mode until that client stops, so each
fixture here does its classic work first and stops its client at the end.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from deltalake import DeltaTable

from tests.conftest import ROOT
from tests.standalone import launch_env

pytestmark = pytest.mark.slow

MODEL = str(ROOT / "models" / "elmo-tweets-small")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from jobs.connect_server import free_port, start_server

    port = free_port()
    process = start_server(port, tmp_path_factory.mktemp("connect-server"), "local[2]")
    yield f"sc://127.0.0.1:{port}"
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=60)


@contextmanager
def connect_session(url: str):
    """A Connect client in this process, which also holds the classic test session.

    pyspark refuses ``SparkSession.builder.remote`` beside a classic session, and picks Connect or classic code
    (functions, ML) by SPARK_CONNECT_MODE_ENABLED, as its own mixed tests do: set while the client lives.
    """
    from pyspark.sql.connect.session import SparkSession as ConnectSession

    os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"
    session = ConnectSession.builder.remote(url).getOrCreate()
    try:
        yield session
    finally:
        session.stop()
        os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)


def stages(spark, cfg, lake: Path, increments: bool = True) -> dict:
    """ingest -> clean -> embed -> train (both engines) -> predict on the built-in sample; what came out.
    ``increments``: then an incremental embed and a folder ingest (their classic runs: test_increments, test_ingest)."""
    from jobs import clean, embed, ingest, predict, train
    from jobs.platform.paths import default_sample, default_score_sample

    tables = {
        name: str(lake / name) for name in ("docs", "score", "clean", "score_clean", "emb", "score_emb")
    }
    ingest.run(spark, cfg, default_sample(), tables["docs"], tables["docs"] + "_rejects")
    ingest.run(spark, cfg, default_score_sample(), tables["score"], tables["score"] + "_rejects")
    clean.run(spark, cfg, tables["docs"], tables["clean"])
    clean.run(spark, cfg, tables["score"], tables["score_clean"])
    embed.run(spark, cfg, tables["clean"], tables["emb"], MODEL)
    embed.run(spark, cfg, tables["score_clean"], tables["score_emb"], MODEL)
    classifier, _ = train.run(spark, cfg, tables["emb"], tables["docs"], str(lake / "classifier"), "sklearn")
    spark_ml, _ = train.run(spark, cfg, tables["emb"], tables["docs"], str(lake / "spark_ml"), "spark")
    predict.run(
        spark, cfg, tables["score_emb"], str(lake / "classifier"), str(lake / "pred"), str(lake / "p.csv")
    )
    embeddings = DeltaTable(tables["emb"]).to_pyarrow_table().to_pylist()
    clean_tokens = {  # both clean tables as the clean stage wrote them (the incremental embed appends one to the other)
        r["id"]: r["tokens"]
        for name in ("clean", "score_clean")
        for r in DeltaTable(tables[name]).to_pyarrow_table().to_pylist()
    }
    return {
        "incremental": incremental_embed(spark, cfg, tables) if increments else None,
        "folder": folder_ingest(spark, cfg, lake) if increments else None,
        "embeddings": {r["id"]: r for r in embeddings},
        "clean": clean_tokens,
        "predictions": (lake / "p.csv").read_text(),
        "f1": classifier.metrics["validation"]["f1"],
        "spark_ml_weights": np.array(spark_ml.weights),
        "spark_ml_baseline": spark_ml.metrics["tfidf_baseline"],
        "runs": DeltaTable(str(lake / "runs")).to_pyarrow_table().num_rows,
    }


def incremental_embed(spark, cfg, tables: dict) -> tuple:
    """The clean table gains the score documents: the next embed reads only them, from the Delta log (read through
    the session, over Connect too); afterwards there is nothing new. (rows read, embedded, rows read after)."""
    from jobs import embed
    from jobs.lake.delta_tables import read_delta, resolve_engine, write_delta
    from jobs.lake.increments import find_work

    engine = resolve_engine(spark, cfg.delta.engine)
    write_delta(
        read_delta(spark, tables["score_clean"], engine), tables["clean"], mode="append", engine=engine
    )

    def work():
        model = embed.resolve_model(MODEL, "tokens", spark, "numpy", "float32")
        stream = {"model_id": model.model_id, "sets": "layer elmo, pooling mean"}
        found = find_work(spark, cfg, "embed", tables["clean"], tables["emb"], stream=stream)
        assert found.incremental
        return found.rows.count()

    before = work()
    summary = embed.run(spark, cfg, tables["clean"], tables["emb"], MODEL)
    return before, summary.embedded + summary.without_tokens, work()


def folder_ingest(spark, cfg, lake: Path) -> tuple:
    """A folder ingested, then again after it gained a file: the second run lists the folder through the session
    and reads only the new file. ((files read, listed), added) for each run."""
    import shutil

    from jobs import ingest
    from jobs.platform.paths import default_sample, default_score_sample

    folder = lake / "incoming"
    folder.mkdir()
    shutil.copy(default_sample(), folder / "labelled.csv")
    first = ingest.run(
        spark, cfg, str(folder), str(lake / "folder_docs"), str(lake / "folder_rejects"), "csv"
    )
    shutil.copy(default_score_sample(), folder / "unlabelled.csv")
    second = ingest.run(
        spark, cfg, str(folder), str(lake / "folder_docs"), str(lake / "folder_rejects"), "csv"
    )
    return (first.files, first.added), (second.files, second.added)


@pytest.fixture(scope="module")
def runs(spark, server, tmp_path_factory):
    """The same stages on classic Spark, then over Connect (delta.engine=auto: the connector on both, when installed)."""
    from jobs.lake.delta_tables import resolve_engine
    from jobs.platform.config import load_config
    from jobs.platform.session import default_parallelism, is_connect, reuse

    root = tmp_path_factory.mktemp("runs")
    # few fits: the Spark engine fits (grid x folds + 1) models for the selection and for the baseline, each a few
    # seconds here, and these are the suite's biggest cost. So one regParam, no selection, and the baseline's
    # hashed features sized to 43 documents (2^12, not 2^18: a third of the time per iteration): the final fit and
    # the baseline's CV (Spark ML and a Python UDF) still run over Connect; the launcher's pipeline and the
    # notebook test select over Connect (sklearn engine), test_classifier selects on the Spark engine
    cfg = load_config(
        "local",
        [
            "delta.engine=auto",
            "train.tfidf_grid=[0.1]",
            "train.select=false",
            "train.folds=2",
            "train.tfidf_features=4096",
        ],
    )
    classic = stages(spark, cfg, root / "classic", increments=False)
    with connect_session(server) as remote:
        facts = {
            "is_connect": is_connect(remote),
            "engine": resolve_engine(remote, "auto"),
            "parallelism": default_parallelism(remote),
            "reuse_is_identity": reuse(probe := remote.range(3)) is probe,
        }
        over_connect = stages(remote, cfg, root / "connect")
    return classic, over_connect, facts


def test_connect_session_facts(runs):
    _, _, facts = runs
    from jobs.platform.delta_connector_jars import installed

    # the server has the Delta connector where ./setup.sh installed it (the stand-in for serverless): auto finds it
    engine = "spark" if installed() else "delta-rs"
    assert facts == {"is_connect": True, "engine": engine, "parallelism": 2, "reuse_is_identity": True}


def test_every_stage_over_connect_equals_the_classic_run(runs):
    classic, remote, _ = runs
    assert remote["clean"] == classic["clean"] and len(classic["clean"]) == 55  # 43 training, 12 to score
    assert set(remote["embeddings"]) == set(classic["embeddings"]) and len(classic["embeddings"]) == 43
    for doc_id, row in classic["embeddings"].items():
        other = remote["embeddings"][doc_id]
        assert (other["model_id"], other["layer"], other["pooling"]) == (row["model_id"], "elmo", "mean")
        if row["embedding"] is None:
            assert other["embedding"] is None
        else:
            np.testing.assert_allclose(other["embedding"], row["embedding"], atol=1e-6, rtol=0)
    assert remote["f1"] == pytest.approx(classic["f1"], abs=1e-9)  # a ratio of counts: the same predictions
    assert remote["predictions"] == classic["predictions"]
    np.testing.assert_allclose(remote["spark_ml_weights"], classic["spark_ml_weights"], atol=1e-4, rtol=1e-3)
    # the honest baseline on the Spark engine (Spark ML and a Python UDF) runs over Connect and chooses alike
    ours, theirs = remote["spark_ml_baseline"], classic["spark_ml_baseline"]
    assert ours["reg_param"] == theirs["reg_param"] and abs(ours["f1"] - theirs["f1"]) <= 1e-6
    assert ours["features"] == theirs["features"] == 4096  # train.tfidf_features reached the baseline
    assert remote["runs"] == classic["runs"] == 2
    assert remote["incremental"] == (12, 12, 0)  # the 12 score documents, then none
    assert remote["folder"] == (((1, 1), 43), ((1, 2), 12))  # the new file read alone


def test_model_copies_from_spark_file_systems_alike(spark, server, tmp_path):
    """Hadoop-path models (hdfs://, s3a://, dbfs:) are copied through Spark's binaryFile source, no py4j."""
    from jobs.embed import COPY_CHUNK_BYTES, copy_from_hadoop
    from jobs.platform.errors import InputError

    source = tmp_path / "model"
    (source / "variables").mkdir(parents=True)
    big = np.random.default_rng(0).bytes(2 * COPY_CHUNK_BYTES + 123)  # three pieces
    (source / "weights.hdf5").write_bytes(big)
    (source / "options.json").write_text("{}")
    (source / "variables" / "variables.index").write_bytes(b"\x00" * 10)
    expected = {p.relative_to(source): p.read_bytes() for p in source.rglob("*") if p.is_file()}

    def copied(session) -> dict:
        target = Path(copy_from_hadoop(session, source.as_uri()))
        return {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}

    assert copied(spark) == expected
    with pytest.raises(InputError, match="does not exist"):
        copy_from_hadoop(spark, (tmp_path / "nope").as_uri())
    with connect_session(server) as remote:
        assert copied(remote) == expected
        with pytest.raises(InputError, match="does not exist"):
            copy_from_hadoop(remote, (tmp_path / "nope").as_uri())


def launch(args: list[str], cwd: Path, timeout: int = 600, **extra: str) -> subprocess.CompletedProcess:
    env = launch_env(**extra)
    env.pop("SPARK_REMOTE", None)
    return subprocess.run(
        [str(ROOT / "spark-submit.sh"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def final_f1(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("F1 on the validation split"))


def test_the_launcher_runs_the_pipeline_over_connect_with_the_classic_f1(server, launched_pipeline, tmp_path):
    classic_dir, classic, _ = (
        launched_pipeline  # the same command on classic Spark (shared with the SQL tests)
    )
    assert classic.returncode == 0, classic.stdout[-3000:] + classic.stderr[-3000:]
    remote = launch(
        ["--remote", server, "jobs/pipeline.py", "--out", "out/connect", "--set", "train.select=false"],
        tmp_path,
    )
    assert remote.returncode == 0, remote.stdout[-3000:] + remote.stderr[-3000:]
    assert final_f1(remote.stdout + remote.stderr) == final_f1(classic.stdout + classic.stderr)
    assert "Spark Connect session at" in remote.stderr
    with open(tmp_path / "out" / "connect" / "predictions.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 12
    assert (tmp_path / "out" / "connect" / "predictions.csv").read_text() == (
        classic_dir / "out" / "classic" / "predictions.csv"
    ).read_text()
    # the standard variable works the same way, and so does a job's --help
    env_run = launch(["jobs/ingest.py", "--table", "lake/docs"], tmp_path, SPARK_REMOTE=server)
    assert env_run.returncode == 0, env_run.stderr[-3000:]
    assert "documents:" in env_run.stdout


def test_connect_failures_are_one_clear_line(server, tmp_path):
    from jobs.connect_server import free_port

    nobody = launch(["--remote", f"sc://127.0.0.1:{free_port()}", "jobs/ingest.py"], tmp_path, timeout=180)
    assert nobody.returncode == 1
    assert "ingest: error: cannot reach the Spark Connect server at sc://127.0.0.1:" in nobody.stderr
    classic_only = launch(["--remote", server, "--executor-memory", "2g", "jobs/ingest.py"], tmp_path)
    assert classic_only.returncode == 2
    assert "--executor-memory is a spark-submit option, but with --remote" in classic_only.stderr


class Widgets:
    """The part of Databricks' dbutils the notebook uses: text widgets, with the values a person would type."""

    def __init__(self, values: dict[str, str]):
        self.values, self.defaults = values, {}

    def text(self, name: str, default: str) -> None:
        self.defaults[name] = default

    def get(self, name: str) -> str:
        return self.values.get(name, self.defaults[name])


def test_the_databricks_notebook_runs_on_a_connect_session(server, tmp_path, monkeypatch):
    from jobs.platform.paths import default_sample, default_score_sample

    notebook = ROOT / "notebooks" / "elmo_lake_pipeline.py"
    source = notebook.read_text()
    assert source.startswith("# Databricks notebook source")
    assert "sparkContext" not in source and "/dbfs/" not in source.replace("`/dbfs/...`", "")
    widgets = {
        "train": default_sample(),
        "score": default_score_sample(),
        "out": str(tmp_path / "volume" / "out"),
        "settings": "delta.engine=auto",  # with train.select: the selection over Connect (the launcher's runs use one set)
    }
    shown = []
    monkeypatch.chdir(ROOT / "notebooks")
    monkeypatch.setenv("ELMO_LAKE_HOME", str(ROOT))
    monkeypatch.setattr(sys, "path", list(sys.path))
    with connect_session(server) as remote:
        namespace = {
            "spark": remote,
            "dbutils": type("DBUtils", (), {"widgets": Widgets(widgets)})(),
            "display": lambda df: shown.append(df.collect()),
        }
        exec(compile(source, str(notebook), "exec"), namespace)
    assert namespace["result"]["classifier"].metrics["validation"]["f1"] > 0.5
    assert len(shown) == 1 and len(shown[0]) == 10 and len(shown[0][0]["head"]) == 5
    assert (tmp_path / "volume" / "out" / "report.html").exists()
    assert DeltaTable(str(tmp_path / "volume" / "out" / "train_embeddings")).version() == 0


def test_the_bilm_corpus_stage_runs_over_connect(server, tmp_path):
    """train_bilm's Spark part (read, clean with spaCy, collect) over Connect; training itself runs here."""
    from jobs import train_bilm
    from jobs.platform.config import load_config
    from tests.test_train_bilm import CORPUS, TINY

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    with connect_session(server) as remote:
        metrics = train_bilm.run(
            remote, load_config("local", TINY), str(corpus), str(tmp_path / "m"), "text", 2
        )
    assert metrics["steps"] == 2 and (tmp_path / "m" / "weights.hdf5").exists()


def test_similar_sql_and_maintain_run_over_connect(server, spark, tmp_path):
    """The querying and maintenance jobs over Connect: the same neighbours and SQL answers as on classic Spark."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from jobs import maintain, similar, sql
    from jobs.platform.config import load_config

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((500, 16)).astype(np.float32)
    table = pa.table(
        {
            "id": [f"d{i:03d}" for i in range(500)],
            "embedding": pa.array(vectors.tolist(), pa.list_(pa.float32())),
            "dim": pa.array([16] * 500, pa.int32()),
            "layer": ["elmo"] * 500,
            "pooling": ["mean"] * 500,
            "model_id": ["elmo-test"] * 500,
        }
    )
    for part in range(0, 500, 100):
        write_deltalake(str(tmp_path / "lake" / "emb"), table.slice(part, 100), mode="append")
    cfg = load_config("local", ["delta.engine=auto"])
    query = "SELECT id, l2_norm(embedding) AS n FROM emb ORDER BY id LIMIT 3"

    def answers(session, name: str) -> tuple:
        similar.run(
            session, cfg, str(tmp_path / "lake" / "emb"), str(tmp_path / name), k=3, ids=["d007", "d123"]
        )
        found = sorted(
            (r["query_id"], r["rank"], r["id"])
            for r in DeltaTable(str(tmp_path / name)).to_pyarrow_table().to_pylist()
        )
        return found, [tuple(r) for r in sql.run(session, cfg, query, lake=str(tmp_path / "lake")).collect()]

    classic = answers(spark, "classic")
    with connect_session(server) as remote:
        found, norms = answers(remote, "connect")
    assert found == classic[0] and [r[0] for r in norms] == [r[0] for r in classic[1]]
    np.testing.assert_allclose([r[1] for r in norms], [r[1] for r in classic[1]], atol=1e-9, rtol=0)
    np.testing.assert_allclose(
        [r[1] for r in norms], np.linalg.norm(vectors[:3].astype(np.float64), axis=1), atol=1e-6
    )
    report = maintain.run(cfg, str(tmp_path / "lake" / "emb"), optimize=True)
    assert report.optimize["numFilesRemoved"] == 5
