"""jobs/platform/python_workers.py: the executors' Python workers outlive Spark's idle minute while kept warm."""

from __future__ import annotations

import os
import time

import pyarrow as pa
import pytest

pytestmark = pytest.mark.slow

# past Spark's fixed minute (PythonWorkerFactory.IDLE_WORKER_TIMEOUT_NS) and the pass of its idle monitor
IDLE_SECONDS = 70


def _worker_pids(spark, pool: str | None = None) -> set[int]:
    """The pids of the Python workers that run a job of two tasks. ``pool``: from a pool of their own. Spark keeps
    one pool of workers, with its own idle minute, per set of environment variables that a function carries
    (``SparkContext.environment`` when the function is made), so a variable set for this job alone gives it
    workers that no other job takes, nor keeps warm."""
    environment = spark.sparkContext.environment
    if pool:
        environment["ELMO_LAKE_TEST_POOL"] = pool

    def pids(batches):
        for batch in batches:
            yield pa.RecordBatch.from_arrays([pa.array([os.getpid()] * batch.num_rows, pa.int64())], ["pid"])

    try:
        return {row.pid for row in spark.range(0, 64, 1, 2).mapInArrow(pids, "pid long").collect()}
    finally:
        environment.pop("ELMO_LAKE_TEST_POOL", None)


def test_kept_warm_workers_outlive_the_idle_minute(spark):
    """In the same 70 s, two pools of workers that each ran a job: the one left idle is gone and its next job starts
    new workers (Spark's minute: what the pipeline's predict met after a train stage of more than a minute, loading
    the model again); the one kept warm runs the next job on the same workers, as predict needs (each holds the
    model). The keeping warm reaches only the session's own pool, the one the jobs' functions use."""
    from jobs.platform.python_workers import kept_warm

    warm_before, idle_before = _worker_pids(spark), _worker_pids(spark, "left idle")
    assert warm_before.isdisjoint(idle_before)  # two pools, or the test proves nothing
    started = time.monotonic()
    with kept_warm(spark, every=10):
        time.sleep(IDLE_SECONDS)
    assert time.monotonic() - started >= IDLE_SECONDS
    assert _worker_pids(spark, "left idle").isdisjoint(idle_before), (
        "Spark kept idle Python workers past its minute"
    )
    assert _worker_pids(spark) == warm_before
