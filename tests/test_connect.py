"""Every stage over a real Spark Connect server, as Databricks serverless and Databricks Connect users run them.

The server is pyspark's own (started on 127.0.0.1 by jobs/connect_server.py, as the README says), its Python
workers on this environment but without this checkout on their path, so the UDFs only work if the jobs send their
code and the model as Spark Connect artifacts. Results must equal the classic run's: the pipeline's command over
Connect is compared with the same command on classic Spark (conftest's ``launched_pipeline``, which the SQL endpoint
tests share), table by table.

Creating a Connect client in a process switches pyspark into Connect mode until that client stops, so each
test here does its classic work first and stops its client at the end.
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

from tests.conftest import ROOT, assert_same_embeddings
from tests.standalone import launch_env

pytestmark = pytest.mark.slow

MODEL = str(ROOT / "models" / "elmo-tweets-small")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from jobs.connect_server import free_port, start_server
    from tests.standalone import long_lived_driver_settings

    port = free_port()
    # a long-lived JVM: C1 only with a large code cache, and the class archive (tests/standalone.py)
    settings = long_lived_driver_settings() or None
    process = start_server(port, tmp_path_factory.mktemp("connect-server"), "local[2]", settings)
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


# The classifier settings of the Spark ML comparison: few fits. The Spark engine fits (grid x folds + 1) models for
# the selection and for the baseline, each a few seconds here. So one regParam, no selection, and the baseline's
# hashed features sized to 43 documents (2^12, not 2^18: a third of the time per iteration): the final fit and the
# baseline's CV (Spark ML and a Python UDF) still run over Connect; the launcher's pipeline and the notebook test
# select over Connect (sklearn engine), test_classifier selects on the Spark engine.
SPARK_ML_SETTINGS = [
    "delta.engine=auto",
    "train.tfidf_grid=[0.1]",
    "train.select=false",
    "train.folds=2",
    "train.tfidf_features=4096",
]


@pytest.fixture(scope="module")
def connect_pipeline(server, launched_pipeline, tmp_path_factory):
    """The launched pipeline's command (README's main command, one embedding set) over Connect: its folder and
    result. Every stage runs in the jobs' process as a Connect client, their UDFs on the server's workers."""
    work = tmp_path_factory.mktemp("connect_pipeline")
    result = launch(
        ["--remote", server, "jobs/pipeline.py", "--out", "out/connect", "--set", "train.select=false"], work
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work / "out" / "connect", result


def test_a_free_port_for_a_server_is_one_the_kernel_does_not_hand_out_meanwhile():
    """free_port (the tests' servers: Connect, the SQL endpoint, the metastore) draws below the ephemeral range."""
    import socket

    from jobs.connect_server import ephemeral_ports, free_port

    low, high = ephemeral_ports()
    ports = {free_port() for _ in range(20)}
    assert all(1024 <= port < low for port in ports) and len(ports) > 1 and low < high
    for port in ports:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))  # free when drawn


def rows_by_id(table: Path) -> dict:
    return {r["id"]: r for r in DeltaTable(str(table)).to_pyarrow_table().to_pylist()}


def final_f1(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("F1 on the validation split"))


# The first test here that needs the server: the launched pipeline (a session fixture, so set up first) starts,
# and the server starts and the same command runs over Connect while it runs.
def test_the_launcher_runs_every_stage_over_connect_with_the_classic_results(
    server, launched_pipeline, connect_pipeline, tmp_path
):
    """ingest -> clean -> embed -> train -> predict through ``./spark-submit.sh --remote``: the same clean tokens,
    embeddings (every id, to 1e-6), F1 and predictions as the same command on classic Spark."""
    classic_dir, classic, _ = launched_pipeline  # shared with the SQL endpoint tests
    assert classic.returncode == 0, classic.stdout[-3000:] + classic.stderr[-3000:]
    out, remote = connect_pipeline
    assert "Spark Connect session at" in remote.stderr
    lake = classic_dir / "out" / "classic"
    clean = {name: rows_by_id(lake / name) for name in ("train_clean", "score_clean")}
    assert sum(map(len, clean.values())) == 55  # 43 training, 12 to score
    for name, rows in clean.items():
        theirs = rows_by_id(out / name)
        assert {i: r["tokens"] for i, r in theirs.items()} == {i: r["tokens"] for i, r in rows.items()}
    for name, count in (("train_embeddings", 43), ("score_embeddings", 12)):
        rows, theirs = rows_by_id(lake / name), rows_by_id(out / name)
        assert len(rows) == count
        assert_same_embeddings(rows, theirs)
        for doc_id, row in rows.items():
            other = theirs[doc_id]
            assert (other["model_id"], other["layer"], other["pooling"]) == (row["model_id"], "elmo", "mean")
    assert final_f1(remote.stdout + remote.stderr) == final_f1(classic.stdout + classic.stderr)
    with open(out / "predictions.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 12
    assert (out / "predictions.csv").read_text() == (lake / "predictions.csv").read_text()
    # the standard variable works the same way, and so does a job's --help
    env_run = launch(["jobs/ingest.py", "--table", "lake/docs"], tmp_path, SPARK_REMOTE=server)
    assert env_run.returncode == 0, env_run.stderr[-3000:]
    assert "documents:" in env_run.stdout


def test_spark_ml_over_connect_fits_the_classic_weights(
    spark, server, launched_pipeline, connect_pipeline, tmp_path
):
    """``train --classifier spark`` in process on each session kind, each on its own pipeline's tables: the same
    weights, and the honest baseline (Spark ML and a Python UDF) chooses alike; each run is recorded."""
    from jobs import train
    from jobs.platform.config import load_config

    cfg = load_config("local", SPARK_ML_SETTINGS)
    lake, out = launched_pipeline[0] / "out" / "classic", connect_pipeline[0]

    def fit(session, tables: Path, name: str):
        model, _ = train.run(
            session,
            cfg,
            str(tables / "train_embeddings"),
            str(tables / "train_documents"),
            str(tmp_path / name / "m"),
            "spark",
        )
        return model, DeltaTable(str(tmp_path / name / "runs")).to_pyarrow_table().num_rows

    classic, classic_runs = fit(spark, lake, "classic")
    with connect_session(server) as remote:
        ours, runs = fit(remote, out, "connect")
    np.testing.assert_allclose(np.array(ours.weights), np.array(classic.weights), atol=1e-4, rtol=1e-3)
    mine, theirs = ours.metrics["tfidf_baseline"], classic.metrics["tfidf_baseline"]
    assert mine["reg_param"] == theirs["reg_param"] and abs(mine["f1"] - theirs["f1"]) <= 1e-6
    assert mine["features"] == theirs["features"] == 4096  # train.tfidf_features reached the baseline
    assert runs == classic_runs == 1


def test_a_connect_session_says_what_it_is(server):
    from jobs.lake.delta_tables import resolve_engine
    from jobs.platform.delta_connector_jars import installed
    from jobs.platform.session import default_parallelism, is_connect, reuse

    with connect_session(server) as remote:
        facts = {
            "is_connect": is_connect(remote),
            "engine": resolve_engine(remote, "auto"),
            "parallelism": default_parallelism(remote),
            "reuse_is_identity": reuse(probe := remote.range(3)) is probe,
        }
    # the server has the Delta connector where ./setup.sh installed it (the stand-in for serverless): auto finds it
    engine = "spark" if installed() else "delta-rs"
    assert facts == {"is_connect": True, "engine": engine, "parallelism": 2, "reuse_is_identity": True}


def test_an_incremental_embed_over_connect_reads_only_the_new_rows(server, connect_pipeline, tmp_path):
    """A clean table embedded, then gaining the score documents: the next embed reads only them, from the Delta log
    (read through the session); afterwards there is nothing new. Five of the Connect pipeline's clean rows to start."""
    from jobs import embed
    from jobs.lake.delta_tables import read_delta, resolve_engine, write_delta
    from jobs.lake.increments import find_work
    from jobs.platform.config import load_config

    out = connect_pipeline[0]
    clean, emb = str(tmp_path / "clean"), str(tmp_path / "emb")
    cfg = load_config("local", ["delta.engine=auto"])
    with connect_session(server) as remote:
        engine = resolve_engine(remote, cfg.delta.engine)

        def copy(name: str, rows: int | None, mode: str) -> None:
            frame = read_delta(remote, str(out / name), engine).orderBy("id")
            write_delta(frame.limit(rows) if rows else frame, clean, mode=mode, engine=engine)

        def work():
            model = embed.resolve_model(MODEL, "tokens", remote, "numpy", "float32")
            stream = {"model_id": model.model_id, "sets": "layer elmo, pooling mean"}
            found = find_work(remote, cfg, "embed", clean, emb, stream=stream)
            assert found.incremental
            return found.rows.count()

        copy("train_clean", 5, "error")
        embed.run(remote, cfg, clean, emb, MODEL)
        copy("score_clean", None, "append")
        before = work()
        summary = embed.run(remote, cfg, clean, emb, MODEL)
        after = work()
    # the score documents, then none
    assert (before, summary.embedded + summary.without_tokens, after) == (12, 12, 0)
    assert len(rows_by_id(tmp_path / "emb")) == 17


def test_a_folder_ingest_over_connect_reads_only_the_new_file(server, tmp_path):
    """A folder ingested, then again after it gained a file: the second run lists the folder through the session
    and reads only the new file."""
    import shutil

    from jobs import ingest
    from jobs.platform.config import load_config
    from jobs.platform.paths import default_sample, default_score_sample

    folder = tmp_path / "incoming"
    folder.mkdir()
    shutil.copy(default_sample(), folder / "labelled.csv")
    cfg = load_config("local", ["delta.engine=auto"])
    docs, rejects = str(tmp_path / "docs"), str(tmp_path / "rejects")
    with connect_session(server) as remote:
        first = ingest.run(remote, cfg, str(folder), docs, rejects, "csv")
        shutil.copy(default_score_sample(), folder / "unlabelled.csv")
        second = ingest.run(remote, cfg, str(folder), docs, rejects, "csv")
    assert ((first.files, first.added), (second.files, second.added)) == (((1, 1), 43), ((1, 2), 12))


def test_model_copies_from_spark_file_systems_alike(spark, server, tmp_path, monkeypatch):
    """Hadoop-path models (hdfs://, s3a://, dbfs:) are copied through Spark's binaryFile source, no py4j."""
    import tempfile

    from jobs.embed import COPY_CHUNK_BYTES, copy_from_hadoop
    from jobs.platform.errors import InputError

    # the driver's model folder, where the copies land, in this test's own temp folder
    (tmp_path / "driver-tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "driver-tmp"))

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
