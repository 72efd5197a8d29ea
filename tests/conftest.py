"""Shared fixtures: one real local Spark session for the whole run, the repository root and ../shared."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# One BLAS thread in the test processes and what they start (pytest-xdist's workers, launched jobs' drivers; Spark
# gives its Python workers one already, OMP_NUM_THREADS): two workers share two cores, and OpenBLAS's second
# thread spins waiting for work. The runtime's own tests measured both ways on the 2-core Xeon: 47 / 48 -> 44 / 45
# CPU-s, the same wall time. Set before numpy is first imported here; a value of your own wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def assert_same_embeddings(rows: dict, others: dict) -> None:
    """Two embedding tables' rows by id: the same ids, and each id's vector equal to the project's 1e-6 (or both
    null: a document without tokens)."""
    import numpy as np

    assert set(others) == set(rows)
    for doc_id, row in rows.items():
        if row["embedding"] is None:
            assert others[doc_id]["embedding"] is None
        else:
            np.testing.assert_allclose(others[doc_id]["embedding"], row["embedding"], atol=1e-6, rtol=0)


def shared_path(*parts: str) -> Path:
    """A file under ../shared, or a skip saying it is absent (CI has it; a bare clone may not)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: this test needs the project's shared data beside the checkout")
    return path


def pytest_configure(config):
    """In the run's first process (the pytest-xdist controller, or the only one), make the JVMs' class archive where
    there is none yet (tests/standalone.py), before the first test: then every JVM the tests start maps it (the test
    sessions', the servers', the launched jobs'). Once per checkout, about half a minute; a run without it only runs
    as before."""
    if hasattr(config, "workerinput") or config.option.collectonly or config.option.help:
        return
    from tests.standalone import class_archive_maker

    maker = class_archive_maker()
    if maker is not None:
        try:
            maker.wait(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(maker.pid, signal.SIGKILL)
            maker.wait()


def suite_session():
    """A local Spark session as the suite's tests get it (two task slots, small shuffles, no UI), for the ``spark``
    fixture and for the processes the suite starts to run beside it (tests/idle_minute.py)."""
    from jobs.platform.config import load_config
    from jobs.platform.session import get_spark
    from tests.standalone import long_lived_driver_settings

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    cfg = load_config(
        "local",
        [
            "spark.master=local[2]",
            "spark.conf.spark.driver.memory=3g",
            "spark.conf.spark.sql.shuffle.partitions=4",
            "spark.conf.spark.ui.enabled=false",
            "spark.conf.spark.ui.showConsoleProgress=false",
            # C1 only with a large code cache, and Spark's classes mapped from the class archive (tests/standalone.py)
            *(f"spark.conf.{key}={value}" for key, value in long_lived_driver_settings().items()),
        ],
    )
    return get_spark(cfg)


def run_id(config) -> str:
    """The same string in every pytest process of one run (pytest-xdist's run id; this process's pid without it)."""
    workerinput = getattr(config, "workerinput", None)
    return workerinput["testrunuid"] if workerinput else f"main-{os.getpid()}"


def pytest_collection_finish(session):
    """Where the run has tests/test_python_workers.py to run, its first process to have collected it (pytest-xdist's
    gw0, or the only one) starts that test's idle-minute probe at once (tests/idle_minute.py): its 70 s of waiting
    then pass beside the other tests, not in a pytest worker."""
    from tests.idle_minute import TEST_FILE, start

    config = session.config
    workerinput = getattr(config, "workerinput", None)
    if config.option.collectonly or (workerinput and workerinput["workerid"] != "gw0"):
        return
    if any(item.nodeid.startswith(TEST_FILE) for item in session.items):
        start(run_id(config))


@pytest.fixture(scope="session")
def spark():
    session = suite_session()
    yield session
    session.stop()


@pytest.fixture(scope="session")
def local_cfg():
    from jobs.platform.config import load_config

    return load_config("local", ["delta.engine=delta-rs"])


class LaunchedPipeline:
    """A pipeline run through the launcher that started at once and is waited for where it is first used: unpacked
    (or indexed) as (workdir, result, settings), ``result`` the finished run's CompletedProcess. Its output goes to
    files, so the job never waits for a reader."""

    def __init__(self, args: list[str], work: Path, settings: list[str], timeout: float):
        from tests.standalone import clean_env

        self.work, self.settings, self.timeout = work, settings, timeout
        self.args = [str(ROOT / "spark-submit.sh"), *args]
        self.stdout, self.stderr = open(work / "stdout.txt", "w+"), open(work / "stderr.txt", "w+")  # noqa: SIM115
        self.process = subprocess.Popen(
            self.args,
            cwd=work,
            env=clean_env(),
            stdout=self.stdout,
            stderr=self.stderr,
            start_new_session=True,
        )
        self._result: subprocess.CompletedProcess | None = None

    @property
    def result(self) -> subprocess.CompletedProcess:
        if self._result is None:
            try:
                self.process.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                self.stop()
            said = []
            for f in (self.stdout, self.stderr):
                f.seek(0)
                said.append(f.read())
                f.close()
            self._result = subprocess.CompletedProcess(self.args, self.process.returncode, *said)
        return self._result

    def __iter__(self):
        return iter((self.work, self.result, self.settings))

    def __getitem__(self, at: int):
        return tuple(self)[at]

    def stop(self) -> None:
        """The whole job gone (its launcher, JVM and Python workers), if it still runs."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture(scope="session")
def launched_pipeline(tmp_path_factory):
    """The README's main command through the launcher (classic, local[2]), with ``--schema lake`` registering its
    tables in a local metastore of the test's own (port, folder): one run shared by the Spark Connect comparison
    and the SQL endpoint tests. It starts when the fixture is set up and is waited for where it is first used
    (``LaunchedPipeline``): the Connect server starts and the same command runs over Connect meanwhile
    (tests/test_connect.py). Gives (workdir, result, settings); the metastore stops at the end."""
    from jobs.connect_server import free_port
    from jobs.platform.local_metastore import client_jar

    work = tmp_path_factory.mktemp("launched_pipeline")
    settings = [
        "--set",
        f"catalog.port={free_port()}",
        "--set",
        f"catalog.home={work / 'metastore'}",
        "--set",
        "spark.master=local[2]",
    ]
    schema = ["--schema", "lake"] if client_jar() is not None else []  # no jars: paths only, SQL tests skip
    # one embedding set, no selection (the suite's time): selection end to end is test_stages' in-process pipeline
    one_set = ["--set", "train.select=false"]
    run = LaunchedPipeline(
        ["jobs/pipeline.py", "--out", "out/classic", *schema, *settings, *one_set],
        work,
        settings,
        timeout=900,
    )
    yield run
    run.stop()
    subprocess.run(
        [sys.executable, "-m", "jobs.metastore", "stop", *settings[:4]],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )


# ./setup.sh test runs the suite on two pytest-xdist workers (--dist loadgroup): the suite spends much of its time
# waiting on JVMs, subprocess jobs and servers, so two streams of tests keep both cores busy. The groups below keep
# together what shares an expensive fixture: a module's tests that use one of its module-scoped fixtures (a Connect
# server, a model) on one worker, so it is built once; the tests that use the launched pipeline (test_connect's
# comparisons with the same command over Connect, the both-engines pipeline test, the SQL endpoint's) on one worker,
# so the pipeline runs once, and with them the rest of test_connect, whose Connect server the comparisons use too:
# apart, each worker started a server of its own (a JVM whose JIT warms up anew). Every other test is a unit of its
# own. The longest units start first (measured with --durations on the 2-core machines), so neither
# worker is left with a long one at the end; the order changes only the wall time, never what runs. pytest-xdist
# keeps this order only with --no-loadscope-reorder (./setup.sh test gives it): by default it hands out the groups
# with the most tests first. Each name is a group, or the start of test ids.
LONGEST_FIRST = (
    "launched_pipeline",
    "tests/test_launcher.py::test_the_pipeline_on_a_standalone_cluster",
    "tests/test_gpu_scheduling.py",
    "tests/test_launcher.py",
    "tests/test_stages.py",
    "tests/test_reliability.py",
    "tests/test_classifier.py",
    "tests/test_backends.py",
)
# ... and last, the test that reads what its probe saw in a process of its own, started when collection ended
# (tests/idle_minute.py): by then its 70 s have passed, and the test does not wait
LAST = ("tests/test_python_workers.py",)


# modules whose module-scoped fixtures the launched pipeline's tests use as well: the whole module joins its group
WITH_THE_LAUNCHED_PIPELINE = ("tests/test_connect.py",)


def xdist_group(item: pytest.Item) -> str | None:
    """The group of tests ``item`` must run with (see above), or None: a unit of its own."""
    fixtures = item._fixtureinfo.name2fixturedefs
    if "launched_pipeline" in fixtures or item.nodeid.startswith(WITH_THE_LAUNCHED_PIPELINE):
        return "launched_pipeline"
    if any(d.scope in ("module", "package", "class") for defs in fixtures.values() for d in defs):
        return item.nodeid.split("::")[0]
    return None


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which writes the groups into the test ids
def pytest_collection_modifyitems(config, items):
    groups = {item: xdist_group(item) for item in items}

    def rank(item: pytest.Item) -> int:
        def named(name: str) -> bool:
            return name == groups[item] or item.nodeid.startswith(name)

        for at, name in enumerate(LONGEST_FIRST):
            if named(name):
                return at
        return len(LONGEST_FIRST) + any(map(named, LAST))

    items.sort(key=rank)  # stable: collection order within a rank
    for item in items:
        if groups[item]:
            item.add_marker(pytest.mark.xdist_group(groups[item]))
