"""jobs/platform/python_workers.py: the executors' Python workers outlive Spark's idle minute while kept warm.

The 70 s this takes pass in a Spark session of its own, started beside the suite when collection ended
(tests/idle_minute.py); the test reads the pids it saw."""

from __future__ import annotations

import pytest

from tests.conftest import run_id
from tests.idle_minute import IDLE_SECONDS, wait_for

pytestmark = pytest.mark.slow


def test_kept_warm_workers_outlive_the_idle_minute(request):
    """In the same 70 s, two pools of workers that each ran a job: the one left idle is gone and its next job starts
    new workers (Spark's minute: what the pipeline's predict met after a train stage of more than a minute, loading
    the model again); the one kept warm runs the next job on the same workers, as predict needs (each holds the
    model). The keeping warm reaches only the session's own pool, the one the jobs' functions use."""
    seen = wait_for(run_id(request.config))
    assert "error" not in seen, seen.get("error")
    warm_before, idle_before = set(seen["warm_before"]), set(seen["idle_before"])
    # two pools, or it proves nothing
    assert warm_before and idle_before and warm_before.isdisjoint(idle_before)
    assert seen["slept"] >= IDLE_SECONDS
    assert set(seen["idle_after"]).isdisjoint(idle_before), "Spark kept idle Python workers past its minute"
    assert set(seen["warm_after"]) == warm_before
