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


def shared_path(*parts: str) -> Path:
    """A file under ../shared, or a skip saying it is absent (CI has it; a bare clone may not)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: this test needs the project's shared data beside the checkout")
    return path


@pytest.fixture(scope="session")
def spark():
    from jobs.config import load_config
    from jobs.session import get_spark

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
    from jobs.config import load_config

    return load_config("local", ["delta.engine=delta-rs"])
