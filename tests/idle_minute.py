"""Spark's idle minute, watched in a Spark session of its own while the rest of the suite runs.

``tests/test_python_workers.py`` must wait past Spark's fixed idle minute (``PythonWorkerFactory``'s
IDLE_WORKER_TIMEOUT_NS) to see which Python workers it stopped. Waiting in the suite's own session would hold a
pytest worker idle for those 70 s; so the run's first pytest process that collects that test starts this module
(``python -m tests.idle_minute OUT``) as soon as collection ends: a local Spark session like the suite's, two pools
of Python workers, 70 s with one of them kept warm, and the pids seen before and after written to ``OUT`` (JSON,
renamed into place whole). The test reads them and asserts; the 70 s pass beside the other tests.

The process ends by itself when its work is done (a few seconds of Spark after the minute), or after
``LIFETIME_SECONDS`` whatever happens, so an interrupted run leaves nothing behind for long.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

# past Spark's fixed minute and the pass of its idle monitor
IDLE_SECONDS = 70
LIFETIME_SECONDS = 600
ROOT = Path(__file__).resolve().parent.parent
TEST_FILE = "tests/test_python_workers.py"


def result_path(run_id: str) -> Path:
    """Where the probe of the pytest run ``run_id`` writes what it saw (known to every pytest process of it)."""
    return Path(tempfile.gettempdir()) / f"elmo-lake-idle-minute-{run_id}.json"


def start(run_id: str) -> subprocess.Popen:
    """Start the probe for run ``run_id`` (its log beside the result), in a process group of its own."""
    out = result_path(run_id)
    out.unlink(missing_ok=True)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    with open(out.with_suffix(".log"), "w") as log:  # the child writes to its own copy of the file
        return subprocess.Popen(
            [sys.executable, "-m", "tests.idle_minute", str(out)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def worker_pids(spark, pool: str | None = None) -> list[int]:
    """The pids of the Python workers that run a job of two tasks. ``pool``: from a pool of their own. Spark keeps
    one pool of workers, with its own idle minute, per set of environment variables that a function carries
    (``SparkContext.environment`` when the function is made), so a variable set for this job alone gives it
    workers that no other job takes, nor keeps warm."""
    import pyarrow as pa

    environment = spark.sparkContext.environment
    if pool:
        environment["ELMO_LAKE_TEST_POOL"] = pool

    def pids(batches):
        for batch in batches:
            yield pa.RecordBatch.from_arrays([pa.array([os.getpid()] * batch.num_rows, pa.int64())], ["pid"])

    try:
        return sorted({row.pid for row in spark.range(0, 64, 1, 2).mapInArrow(pids, "pid long").collect()})
    finally:
        environment.pop("ELMO_LAKE_TEST_POOL", None)


def watch() -> dict:
    """Two pools of workers that each ran a job; 70 s with the session's own pool kept warm (``kept_warm``) and
    the other left idle; then each pool's workers for its next job."""
    from jobs.platform.python_workers import kept_warm
    from tests.conftest import suite_session

    spark = suite_session()
    try:
        warm_before, idle_before = worker_pids(spark), worker_pids(spark, "left idle")
        started = time.monotonic()
        with kept_warm(spark, every=10):
            time.sleep(IDLE_SECONDS)
        slept = time.monotonic() - started
        return {
            "warm_before": warm_before,
            "idle_before": idle_before,
            "slept": slept,
            "idle_after": worker_pids(spark, "left idle"),
            "warm_after": worker_pids(spark),
        }
    finally:
        spark.stop()


def main(out: str) -> None:
    signal.alarm(LIFETIME_SECONDS)  # whatever happens, gone after this
    try:
        seen = watch()
    except Exception:
        seen = {"error": traceback.format_exc()}
    partial = Path(f"{out}.part.{os.getpid()}")
    partial.write_text(json.dumps(seen))
    partial.replace(out)


def wait_for(run_id: str, timeout: float = LIFETIME_SECONDS) -> dict:
    """What the probe of run ``run_id`` saw, once it is written, its files then removed (it raises, with the probe's
    log, if the probe never wrote it)."""
    out = result_path(run_id)
    deadline = time.monotonic() + timeout
    while not out.exists():
        if time.monotonic() > deadline:
            log = out.with_suffix(".log")
            said = log.read_text()[-3000:] if log.exists() else "(no log: the probe never started)"
            raise AssertionError(f"the idle-minute probe wrote nothing to {out} in {timeout:.0f} s:\n{said}")
        time.sleep(0.5)
    seen = json.loads(out.read_text())
    out.unlink()
    out.with_suffix(".log").unlink(missing_ok=True)
    return seen


if __name__ == "__main__":
    main(sys.argv[1])
