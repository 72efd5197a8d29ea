"""jobs/platform/python_workers.py: the executors' Python workers outlive Spark's idle minute while kept warm."""

from __future__ import annotations

import os
import time

import pyarrow as pa
import pytest

pytestmark = pytest.mark.slow

# past Spark's fixed minute (PythonWorkerFactory.IDLE_WORKER_TIMEOUT_NS) and the pass of its idle monitor
IDLE_SECONDS = 70


def _worker_pids(spark) -> set[int]:
    def pids(batches):
        for batch in batches:
            yield pa.RecordBatch.from_arrays([pa.array([os.getpid()] * batch.num_rows, pa.int64())], ["pid"])

    return {row.pid for row in spark.range(0, 64, 1, 2).mapInArrow(pids, "pid long").collect()}


def test_kept_warm_workers_outlive_the_idle_minute(spark):
    """Left idle for 70 s, the workers that ran a job are gone and the next job starts new ones (Spark's minute:
    what the pipeline's predict met after a train stage of more than a minute, loading the model again); kept
    warm for 70 s, the same workers run the next job, as predict needs (each holds the model)."""
    from jobs.platform.python_workers import kept_warm

    idle_before = _worker_pids(spark)
    time.sleep(IDLE_SECONDS)
    idle_after = _worker_pids(spark)
    assert idle_after.isdisjoint(idle_before), "Spark kept idle Python workers past its minute"

    warm_before = _worker_pids(spark)
    started = time.monotonic()
    with kept_warm(spark, every=10):
        time.sleep(IDLE_SECONDS)
    assert time.monotonic() - started >= IDLE_SECONDS
    assert _worker_pids(spark) == warm_before
