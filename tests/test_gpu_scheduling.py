"""Spark's GPU scheduling reaches the embed UDF, proven on a machine without GPUs.

A real standalone cluster whose worker offers two GPUs through ``conf/discover_gpus.sh`` (addresses listed by
ELMO_LAKE_GPU_ADDRESSES, as on a node whose nvidia-smi is not on PATH), executors configured by ``conf/gpu.toml``
(one GPU each, half a GPU per task), and the embed stage through the launcher. The workers' log lines say which
address each task got and where each Python worker placed its model; the table must equal a CPU-only run.
"""

from __future__ import annotations

import re
import subprocess

import pytest
from deltalake import DeltaTable

from jobs import clean as clean_job
from jobs import embed as embed_job
from jobs import ingest as ingest_job
from jobs.platform.config import load_config
from jobs.platform.paths import default_sample
from tests.conftest import ROOT
from tests.elmo_fixture import assert_batch_invariant
from tests.standalone import clean_env, executor_logs, one_machine_settings, standalone_cluster

TASK_LINE = re.compile(
    r"elmo-lake embed: task \d+ \(partition (\d+)\) on GPU (\S+), worker (\d+): (\d+) rows"
)
MODEL_LINE = re.compile(r"elmo-lake embed: worker (\d+) runs ELMo (\S+) \(native\) on GPU (\S+) \((.*?)\)")


@pytest.mark.slow
def test_tasks_get_gpu_addresses_0_and_1_and_place_their_model_there(spark, tmp_path):
    cfg = load_config("local", ["delta.engine=delta-rs"])
    docs, clean = str(tmp_path / "docs"), str(tmp_path / "clean")
    ingest_job.run(spark, cfg, default_sample(), docs, docs + "_rejects")
    clean_job.run(spark, cfg, docs, clean)
    cpu = embed_job.run(spark, cfg, clean, str(tmp_path / "cpu"))  # the CPU-only run, in this process

    work = tmp_path / "cluster"
    work.mkdir()
    script = ROOT / "conf" / "discover_gpus.sh"
    worker_gpus = f"-Dspark.worker.resource.gpu.amount=2 -Dspark.worker.resource.gpu.discoveryScript={script}"
    # 4 cores and 2 GPUs on the worker; conf/gpu.toml asks 2 cores and 1 GPU per executor: two executors
    with standalone_cluster(
        work, cores=4, memory="6g", worker_opts=worker_gpus, ELMO_LAKE_GPU_ADDRESSES="0,1"
    ) as master:
        result = subprocess.run(
            [
                str(ROOT / "spark-submit.sh"),
                "--master",
                master,
                "--files",
                str(script),
                "--conf",
                "spark.scheduler.minRegisteredResourcesRatio=1.0",  # both executors before the first task
                "--conf",
                "spark.scheduler.maxRegisteredResourcesWaitingTime=120s",
                "jobs/embed.py",
                "--conf",
                "gpu",
                "--set",
                "spark.conf.spark.executor.memory=1g",
                "--set",
                "embed.partitions=8",
                *one_machine_settings(),
                "--input",
                clean,
                "--output",
                str(tmp_path / "gpu"),
            ],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=500,
        )
        logs = executor_logs(work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    tasks = TASK_LINE.findall(logs)
    models = MODEL_LINE.findall(logs)
    assert {gpu for _, gpu, _, _ in tasks} == {"0", "1"}, logs[-4000:]
    assert sorted(int(p) for p, _, _, _ in tasks) == list(range(8))  # every partition once, each on a GPU
    placed = {pid: gpu for pid, _, gpu, _ in models}
    for _, gpu, pid, _ in tasks:
        assert placed[pid] == gpu, (
            f"worker {pid} ran a task on GPU {gpu} with its model placed on {placed[pid]}"
        )
    # no GPU on this machine: each worker says so, with the device its model asked for
    assert all(re.match(rf"/GPU:{gpu} requested", where) for _, _, gpu, where in models), models

    def vectors(path):
        return {r["id"]: r for r in DeltaTable(path).to_pyarrow_table().to_pylist()}

    on_cpu, on_gpus = vectors(str(tmp_path / "cpu")), vectors(str(tmp_path / "gpu"))
    assert set(on_gpus) == set(on_cpu) and len(on_cpu) == cpu.embedded + cpu.without_tokens
    for key, row in on_cpu.items():
        other = on_gpus[key]
        assert other["model_id"] == row["model_id"] == cpu.model_id
        if row["embedding"] is None:
            assert other["embedding"] is None
        else:
            assert_batch_invariant(other["embedding"], row["embedding"])
