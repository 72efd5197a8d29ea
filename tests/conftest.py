"""Shared fixtures: one real local Spark session for the whole run, the repository root and ../shared."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# `./setup.sh test` runs the suite on two pytest-xdist workers (-n 2 --dist loadfile --no-loadscope-reorder): each
# worker takes whole modules, in this order, the longest first, so that neither is left with a long module at the
# end while the other idles. Modules that share an expensive session fixture go to one worker as one unit.
LONGEST_FIRST = (
    "test_connect",
    "test_launcher",
    "test_reliability",
    "test_classifier",
    "test_gpu_scheduling",
    "test_delta_connector",
    "test_increments",
    "test_ingest",
    "test_quarantine",
    "test_querying",
    "test_hub_interop",
)
SAME_WORKER_AS = {"test_sql_endpoint": "test_connect"}  # both read launched_pipeline


def worker_unit(nodeid: str) -> str:
    """What one worker runs together: a test's module, or the module it shares a session fixture with."""
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
    return SAME_WORKER_AS.get(module, module)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: place for place, name in enumerate(LONGEST_FIRST)}
    # a stable sort: each module's tests keep their order
    items.sort(key=lambda item: rank.get(worker_unit(item.nodeid), len(rank)))


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: without xdist (one process) it is never called
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """--dist loadfile with SAME_WORKER_AS: xdist's own loadgroup marks do not reach its scheduler on pytest 9."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return worker_unit(nodeid)

    return ByUnit(config, log)


def shared_path(*parts: str) -> Path:
    """A file under ../shared, or a skip saying it is absent (CI has it; a bare clone may not)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: this test needs the project's shared data beside the checkout")
    return path


@pytest.fixture(scope="session")
def spark():
    from jobs.platform.config import load_config
    from jobs.platform.session import get_spark

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    cfg = load_config(
        "local",
        [
            "spark.master=local[2]",
            "spark.conf.spark.driver.memory=3g",
            "spark.conf.spark.sql.shuffle.partitions=4",
            "spark.conf.spark.ui.enabled=false",
            "spark.conf.spark.ui.showConsoleProgress=false",
        ],
    )
    session = get_spark(cfg)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def local_cfg():
    from jobs.platform.config import load_config

    return load_config("local", ["delta.engine=delta-rs"])


@pytest.fixture(scope="session")
def launched_pipeline(tmp_path_factory):
    """The README's main command through the launcher (classic, local[2]), with ``--schema lake`` registering its
    tables in a local metastore of the test's own (port, folder): one run shared by the Spark Connect comparison
    and the SQL endpoint tests. Yields (workdir, result, settings); the metastore stops at the end."""
    import subprocess

    from jobs.platform.local_metastore import client_jar
    from tests.standalone import clean_env, free_port

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
    result = subprocess.run(
        [
            str(ROOT / "spark-submit.sh"),
            "jobs/pipeline.py",
            "--out",
            "out/classic",
            *schema,
            *settings,
            *one_set,
        ],
        cwd=work,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=1500,  # two test workers share the CPU
    )
    yield work, result, settings
    subprocess.run(
        [sys.executable, "-m", "jobs.metastore", "stop", *settings[:4]],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
