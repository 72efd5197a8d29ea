"""Tables by name and the SQL endpoint, as an analyst meets them: the pipeline registers its tables in the local
metastore (a real Derby network server), jobs/serve_sql.py serves them with Spark's Thrift server, and real
clients query them: beeline (from pyspark's jars) and impyla (a Python DB-API client). A job appending by name
while the endpoint runs is seen by the next query."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from deltalake import DeltaTable

from jobs.connect_server import free_port
from tests.conftest import ROOT
from tests.standalone import clean_env

LAUNCHER = str(ROOT / "spark-submit.sh")


def launch(args: list[str], cwd: Path, timeout: int = 420) -> subprocess.CompletedProcess:
    return subprocess.run(
        [LAUNCHER, *args], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def endpoint(launched_pipeline):
    """The pipeline's tables (run with --schema lake: conftest), served by the endpoint over that schema."""
    from jobs.platform.local_metastore import client_jar

    if client_jar() is None:
        pytest.skip(
            "the local metastore's jars are not installed (./setup.sh fetches them from Maven Central)"
        )
    work, pipeline, settings = launched_pipeline
    assert pipeline.returncode == 0, pipeline.stdout[-3000:] + pipeline.stderr[-3000:]
    assert "registered in schema lake (" in pipeline.stdout
    assert "started the local metastore" in pipeline.stdout + pipeline.stderr

    port = free_port()
    server = subprocess.Popen(
        [LAUNCHER, "jobs/serve_sql.py", "--schema", "lake", "--port", str(port), *settings],
        cwd=work,
        env=clean_env(short_job=False),  # a long-lived server (tests/standalone.py)
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the test stops it as Ctrl-C would, all at once
    )
    output: list[str] = []
    ready = threading.Event()

    def read():
        for line in server.stdout:
            output.append(line)
            if line.startswith("ready: "):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(240):
        os.killpg(server.pid, signal.SIGKILL)
        pytest.fail("the endpoint did not get ready in 240 s:\n" + "".join(output)[-4000:])
    url = next(line.split(" ", 1)[1].strip() for line in output if line.startswith("ready: "))
    yield {
        "url": url,
        "port": port,
        "lake": work / "out" / "classic",
        "work": work,
        "settings": settings,
        "server": server,
        "output": output,
    }
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGKILL)


def beeline(url: str, *statements: str) -> list[list[str]]:
    """The rows pyspark's own beeline prints, as CSV cells."""
    import pyspark

    tool = Path(os.path.dirname(pyspark.__file__)) / "bin" / "beeline"
    done = subprocess.run(
        [
            str(tool),
            "-u",
            url,
            "--silent=true",
            "--showHeader=true",
            "--outputformat=csv2",
            "-e",
            "; ".join(statements),
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return [line.split(",") for line in done.stdout.splitlines() if line and not line.startswith("0: jdbc")]


def connect(port: int):
    from impala.dbapi import connect as impyla_connect

    return impyla_connect(host="127.0.0.1", port=port, auth_mechanism="PLAIN", user="analyst", password="-")


@pytest.mark.slow
def test_beeline_reads_the_pipelines_tables_by_name_with_their_documentation(endpoint):
    assert endpoint["url"] == f"jdbc:hive2://127.0.0.1:{endpoint['port']}/lake"
    plain_url = endpoint["url"].rsplit("/", 1)[0]  # as the command: no schema in the URL
    expected = DeltaTable(str(endpoint["lake"] / "train_embeddings")).to_pyarrow_table().num_rows
    rows = beeline(plain_url, "SELECT count(*) AS n FROM lake.train_embeddings")
    assert rows[-1] == [str(expected)]
    assert beeline(plain_url, "SELECT count(*) FROM spark_catalog.lake.train_embeddings")[-1] == [
        str(expected)
    ]

    described = subprocess.run(
        [
            str(Path(__import__("pyspark").__file__).parent / "bin" / "beeline"),
            "-u",
            plain_url,
            "--silent=true",
            "-e",
            "DESCRIBE TABLE EXTENDED lake.train_embeddings; SHOW TABLES IN lake",
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=180,
    ).stdout
    assert "elmo-lake ELMo embeddings: one row per document" in described  # the table's description
    assert "hash of the ELMo model's options and weights" in described  # a column comment
    assert f"file:{endpoint['lake']}/train_embeddings" in described  # an external table over the folder
    for table in (
        "train_documents",
        "train_clean",
        "train_embeddings",
        "score_embeddings",
        "predictions",
        "runs",
    ):
        assert re.search(rf"\|\s*lake\s*\|\s*{table}\s*\|", described), table


@pytest.mark.slow
def test_a_python_client_gets_numpys_nearest_neighbours(endpoint):
    # one embedding set (with train.select the pipeline embeds the training documents with every set it compares)
    one_set = "layer = 'elmo' AND pooling = 'mean'"
    table = DeltaTable(str(endpoint["lake"] / "train_embeddings")).to_pandas()
    table = table[(table["layer"] == "elmo") & (table["pooling"] == "mean") & table["embedding"].notna()]
    ids = table["id"].to_numpy()
    vectors = np.stack(table["embedding"].to_numpy()).astype(np.float64)
    query_id = sorted(ids)[0]
    query = vectors[list(ids).index(query_id)]
    cosine = vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    order = sorted(range(len(ids)), key=lambda i: (-cosine[i], ids[i]))[:10]

    with connect(endpoint["port"]) as conn, closing(conn.cursor()) as cursor:
        cursor.execute("SHOW TABLES IN lake")
        assert "train_embeddings" in {row[1] for row in cursor.fetchall()}
        cursor.execute(
            f"SELECT id, embedding, dim FROM lake.train_embeddings WHERE id = '{query_id}' AND {one_set}"
        )
        (row_id, embedding, dim) = cursor.fetchone()
        vector = json.loads(embedding)  # HiveServer2 sends arrays as JSON text
        assert row_id == query_id and len(vector) == dim
        np.testing.assert_allclose(vector, query, rtol=1e-6)
        # an analyst's nearest-neighbour query, with the endpoint's vector functions (unqualified: default's)
        cursor.execute(
            "SELECT e.id, cosine_similarity(e.embedding, q.embedding) AS score "
            "FROM lake.train_embeddings e CROSS JOIN "
            f"(SELECT embedding FROM lake.train_embeddings WHERE id = '{query_id}' AND {one_set}) q "
            f"WHERE e.embedding IS NOT NULL AND e.{one_set.replace(' AND ', ' AND e.')} "
            "ORDER BY score DESC, e.id LIMIT 10"
        )
        found = cursor.fetchall()
    assert [r[0] for r in found] == [ids[i] for i in order]
    np.testing.assert_allclose([r[1] for r in found], cosine[order], atol=1e-6)


@pytest.mark.slow
def test_rows_a_job_appends_by_name_are_seen_by_the_next_query(endpoint):
    with connect(endpoint["port"]) as conn, closing(conn.cursor()) as cursor:
        cursor.execute("SELECT count(*) FROM lake.train_documents")
        before = cursor.fetchone()[0]
        new = endpoint["work"] / "new.csv"
        new.write_text("id,label,tweet\nsql-new-1,0,a brand new happy day\nsql-new-2,1,another sad new day\n")
        appended = launch(
            ["jobs/ingest.py", "--input", str(new), "--table", "lake.train_documents", *endpoint["settings"]],
            endpoint["work"],
        )
        assert appended.returncode == 0, appended.stdout[-3000:] + appended.stderr[-3000:]
        assert "documents: lake.train_documents (Delta, version 1)" in appended.stdout
        cursor.execute("SELECT count(*) FROM lake.train_documents")
        assert cursor.fetchone()[0] == before + 2
    # the name is the folder the pipeline wrote: the rows are in its Delta table
    assert DeltaTable(str(endpoint["lake"] / "train_documents")).to_pyarrow_table().num_rows == before + 2


@pytest.mark.slow
def test_a_busy_port_or_a_bad_lake_is_one_line(endpoint, tmp_path):
    def serve(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "jobs.serve_sql", *args],
            cwd=ROOT,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )

    busy = serve("--schema", "lake", "--port", str(endpoint["port"]))
    assert busy.returncode == 1
    assert busy.stderr.strip().splitlines()[-1] == (
        f"serve_sql: error: port {endpoint['port']} on 127.0.0.1 is in use: choose another with --port, or stop "
        "what uses it"
    )
    empty = serve("--lake", str(tmp_path), "--port", str(free_port()))
    assert empty.returncode == 1
    assert (
        empty.stderr.strip().splitlines()[-1].endswith("holds no Delta table (no folder with a _delta_log)")
    )
    neither = serve()
    assert neither.returncode == 1 and "give --schema NAME" in neither.stderr


@pytest.mark.slow
def test_the_endpoint_stops_on_sigterm(endpoint):
    server = endpoint["server"]
    os.killpg(server.pid, signal.SIGTERM)  # what Ctrl-C does to the foreground group, as SIGTERM
    server.wait(timeout=90)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        import socket

        try:
            socket.create_connection(("127.0.0.1", endpoint["port"]), timeout=1).close()
        except OSError:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the port still answers after SIGTERM")
    assert any("serve_sql: stopping" in line for line in endpoint["output"])
    with pytest.raises(ProcessLookupError):  # nothing of it is left: not the JVM, not the Python driver
        for _ in range(20):
            os.killpg(server.pid, 0)
            time.sleep(0.5)


def test_names_and_paths_are_told_apart(tmp_path, monkeypatch):
    from jobs.platform.table_names import is_table_name

    monkeypatch.chdir(tmp_path)
    assert is_table_name("lake.train_embeddings")
    assert is_table_name("main.default.train_embeddings")
    for path in (
        "out",
        "lake/docs",
        "/abs/lake.docs",
        "tweets.csv",
        "data.jsonl",
        "s3://b/lake.t",
        "a.b.c.d",
    ):
        assert not is_table_name(path), path
    (tmp_path / "lake.v2").mkdir()
    assert not is_table_name("lake.v2")  # an existing folder is a path


def test_a_name_on_the_delta_rs_engine_is_refused_in_one_line(spark):
    from jobs.lake.delta_tables import read_delta
    from jobs.platform.errors import InputError

    with pytest.raises(InputError, match=r"lake.docs is a table name, .* delta-rs engine does not use"):
        read_delta(spark, "lake.docs", "delta-rs")
