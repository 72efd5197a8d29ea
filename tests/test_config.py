"""Configuration: every shipped environment loads, and bad settings are reported all at once, by name."""

from __future__ import annotations

import pytest

from jobs.platform.config import load_config
from jobs.platform.errors import ConfigError


@pytest.mark.parametrize("name", ["local", "cluster", "databricks", "gpu"])
def test_every_shipped_config_loads(name):
    cfg = load_config(name)
    assert cfg.delta.engine in ("auto", "spark", "delta-rs")
    assert all(isinstance(v, str) for v in cfg.spark.conf.values())


def test_local_is_the_default_and_runs_locally_with_arrow():
    cfg = load_config()
    assert cfg.spark.master == "local[*]"
    assert cfg.spark.conf["spark.sql.execution.arrow.pyspark.enabled"] == "true"


def test_gpu_config_asks_for_gpus_per_executor_and_task():
    conf = load_config("gpu").spark.conf
    assert conf["spark.executor.resource.gpu.amount"] == "1"
    assert float(conf["spark.task.resource.gpu.amount"]) <= 1
    assert conf["spark.executor.resource.gpu.discoveryScript"].endswith("discover_gpus.sh")


def test_overrides_are_typed_and_dotted():
    cfg = load_config(
        "local",
        ["delta.target_file_rows=500", "spark.conf.spark.executor.memory=2g", "spark.master=local[1]"],
    )
    assert cfg.delta.target_file_rows == 500
    assert cfg.spark.conf["spark.executor.memory"] == "2g"
    assert cfg.spark.master == "local[1]"


def test_every_problem_is_reported_by_name_with_what_is_allowed(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[delta]\nengine = "hive"\ntarget_file_rows = "many"\n[ingest]\nfromat = "csv"\n[embedd]\nx = 1\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(str(bad), ["spark.log_level=LOUD", "train.tfidf_features=8"])
    message = str(info.value)
    assert len(info.value.problems) == 6
    assert "delta.engine: 'hive' is not allowed (allowed: 'auto', 'delta-rs', 'spark')" in message
    assert "delta.target_file_rows: expected int" in message
    assert "ingest.fromat: unknown setting (did you mean 'format'?" in message
    assert "[embedd]: unknown section" in message
    assert "spark.log_level: 'LOUD' is not allowed" in message
    assert "train.tfidf_features: must be at least 16, got 8" in message


def test_missing_file_unknown_name_and_broken_toml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="no built-in configuration named 'laptop'.*local"):
        load_config("laptop")
    broken = tmp_path / "broken.toml"
    broken.write_text("[delta\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(str(broken))


def test_override_without_a_section_is_explained():
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config("local", ["engine=spark"])
