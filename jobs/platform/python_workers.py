"""Keeping the executors' Python workers, and the models they hold, alive between two stages that use them.

Spark stops every idle Python worker of an executor once that executor has started or released none for one
minute (``PythonWorkerFactory.IDLE_WORKER_TIMEOUT_NS``: fixed, not a setting). A worker holds what it loaded:
the embed stage's ELMo model (``udfs/embed.get_model``), TensorFlow. The pipeline's train stage works on the
driver for longer than a minute on real data, so without this its predict stage would start new workers and
import TensorFlow and load the model again in each (on the tweets, 2-core Xeon: predict 28.4 s so, 23.6 s kept
warm).

``kept_warm`` runs one tiny Python task per task slot every ``every`` seconds while its block runs: each task
takes an idle worker and gives it back, which restarts the executor's minute. It only ever delays Spark's own
clean-up; a beat that fails (the session stopped, a server that refuses) ends the beats and nothing else.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession

from jobs.platform.session import default_parallelism

BEAT_SECONDS = 20.0  # well inside Spark's minute, even when a beat waits for busy task slots


@contextmanager
def kept_warm(spark: SparkSession, every: float = BEAT_SECONDS) -> Iterator[None]:
    """While the block runs, keep the Python workers that the session's executors have from idling out."""
    slots = default_parallelism(spark)
    stop = threading.Event()

    def unchanged(batches):  # pickled by value: executors need none of jobs/ for it
        yield from batches

    def beat() -> None:
        while not stop.wait(every):
            try:
                spark.range(0, slots, 1, slots).mapInArrow(unchanged, "id long").collect()
            except Exception:  # the session is going away: Spark's own clean-up applies again
                return

    thread = threading.Thread(target=beat, name="elmo-lake: Python workers kept warm", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=120)  # a beat in flight is a few tiny tasks
