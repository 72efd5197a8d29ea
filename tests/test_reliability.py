"""Faults with real processes: overlapping runs, kill -9 of a job while its tasks run and just before its commit,
a Python worker killed mid-task, and table maintenance. After each: the table is at its previous version or
complete, every id exactly once, and no orphan file once the next write ran."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from tests.conftest import ROOT
from tests.standalone import launch_env

pytestmark = pytest.mark.slow

MODEL = str(ROOT / "models" / "elmo-tweets-small")
WORDS = "my new phone battery died again today love the camera screen is great slow update broke it".split()


def clean_table(path: Path, rows: int, start: int = 0) -> None:
    """A clean table (as jobs/clean.py writes it) of generated token lists, ids start..start+rows-1."""
    ids = [f"doc-{i}" for i in range(start, start + rows)]
    tokens = [
        [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(8 + i % 17)] for i in range(start, start + rows)
    ]
    table = pa.table(
        {
            "id": ids,
            "clean_text": [" ".join(t) for t in tokens],
            "tokens": pa.array(tokens, pa.list_(pa.string())),
            "empty": [False] * rows,
            "clean_fingerprint": ["test"] * rows,
        }
    )
    write_deltalake(str(path), table, mode="append")


class Job:
    """A launcher process in its own process group, whose output is read as it comes."""

    def __init__(self, args: list[str], cwd: Path, **env: str):
        self.process = subprocess.Popen(
            [str(ROOT / "spark-submit.sh"), *args],
            cwd=cwd,
            env=launch_env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.process.poll() is not None:
                self.reader.join(5)
                raise AssertionError(
                    f"exited ({self.process.returncode}) before {text!r}:\n{self.output[-3000:]}"
                )
            time.sleep(0.2)
        raise AssertionError(f"no {text!r} within {timeout} s:\n{self.output[-3000:]}")

    def finish(self, timeout: float = 600) -> str:
        self.process.wait(timeout=timeout)
        self.reader.join(10)
        assert self.process.returncode == 0, self.output[-4000:]
        return self.output

    def kill_all(self) -> None:
        """kill -9 of the whole job: the launcher's JVM, the driver and every Python worker."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)
        self.reader.join(10)


def embed_args(clean: Path, out: Path, *more: str) -> list[str]:
    return ["jobs/embed.py", "--input", str(clean), "--output", str(out), "--model", MODEL, *more]


def ids_in(table: Path) -> list[str]:
    return DeltaTable(str(table)).to_pyarrow_table(columns=["id"]).column("id").to_pylist()


def assert_no_orphans(table: Path, engine: str = "delta-rs") -> None:
    """No staging left and every data file on disk is referenced by the table's current version (delta-rs engine;
    on the connector, files of a killed task or write stay until VACUUM, as in Delta itself)."""
    assert not (table / "_elmo_lake_staging").exists()
    if engine != "delta-rs":
        return
    referenced = {
        unquote(p) for p in pa.table(DeltaTable(str(table)).get_add_actions(flatten=True))["path"].to_pylist()
    }
    on_disk = {str(p.relative_to(table)) for p in table.rglob("*.parquet") if "_delta_log" not in p.parts}
    assert on_disk == referenced, on_disk ^ referenced


@pytest.mark.parametrize(
    "slow_engine,fast_engine",
    [("delta-rs", "delta-rs"), ("spark", "spark"), ("spark", "delta-rs")],
    ids=["delta-rs", "connector", "one-run-on-each-engine"],
)
def test_two_embed_runs_at_once_write_every_id_exactly_once(spark, tmp_path, slow_engine, fast_engine):
    """The overlapping scheduled run: both read the same snapshot; the second to commit re-reads and adds nothing.
    On the connector the slow run pauses after reading the table, before its MERGE (whose own conflict
    detection and key match cover the moments after)."""
    from jobs import embed
    from jobs.platform.config import load_config

    if "spark" in (slow_engine, fast_engine):
        needs_connector()
    clean, out = tmp_path / "clean", tmp_path / "emb"
    clean_table(clean, 300)
    for round_ in (1, 2):  # first into no table, then into a table that exists, after the input grew
        if round_ == 2:
            clean_table(clean, 200, start=300)
        resume = tmp_path / f"resume-{round_}"
        slow = Job(
            embed_args(clean, out, "--set", "spark.master=local[1]", "--set", f"delta.engine={slow_engine}"),
            tmp_path,
            ELMO_LAKE_PAUSE_BEFORE_COMMIT="150",
            ELMO_LAKE_RESUME_FILE=str(resume),
        )
        slow.wait_for(
            "pausing"
        )  # it has read the table (delta-rs: and written its files); the other starts now
        # the other run: the tests' own session (another application, as a second scheduled run would be)
        embed.run(spark, load_config("local", [f"delta.engine={fast_engine}"]), str(clean), str(out), MODEL)
        resume.touch()  # the other run has committed: the paused one goes on
        output = slow.finish()
        assert "another run committed to" in output and "nothing to embed" in output
        ids = ids_in(out)
        assert len(ids) == len(set(ids)) == (300 if round_ == 1 else 500)
        assert "cuInit" not in output  # CPU workers keep CUDA's probing quiet
    assert_no_orphans(out, slow_engine if slow_engine == fast_engine else "spark")


def prepared(spark, tmp_path: Path, rows: int = 2000) -> tuple[Path, Path, int]:
    """A clean table of ``rows`` ids whose first 20 an earlier run embedded (the output at version 0, that run's
    progress in its commit): the next run reads only the rows the input gained since (jobs/lake/increments.py)."""
    from jobs import embed
    from jobs.platform.config import load_config

    clean, out = tmp_path / "clean", tmp_path / "emb"
    clean_table(clean, 20)
    embed.run(spark, load_config("local", ["delta.engine=delta-rs"]), str(clean), str(out), MODEL)
    clean_table(clean, rows - 20, start=20)
    return clean, out, DeltaTable(str(out)).version()


def needs_connector() -> None:
    from jobs.platform.delta_connector_jars import installed

    if installed() is None:
        pytest.skip(
            "the Delta connector's jars are not installed: run ./setup.sh where Maven Central is reachable"
        )


def rerun_and_check(spark, clean: Path, out: Path, rows: int, engine: str = "delta-rs") -> None:
    """The next run (in the tests' own session): it completes the table, and leaves no orphan behind."""
    from jobs import embed
    from jobs.platform.config import load_config

    cfg = load_config("local", ["delta.staging_max_age_hours=0", f"delta.engine={engine}"])
    embed.run(spark, cfg, str(clean), str(out), MODEL)
    ids = ids_in(out)
    assert len(ids) == len(set(ids)) == rows
    # the rerun read what the input gained since the first run, and recorded the version it reached
    progress = json.loads(DeltaTable(str(out)).history(1)[0]["userMetadata"])
    assert progress["input_version"] == DeltaTable(str(clean)).version() == 1
    assert_no_orphans(out, engine)


@pytest.mark.parametrize("engine", ["delta-rs", "spark"], ids=["delta-rs", "connector"])
def test_kill_9_of_the_whole_job_while_its_tasks_run(spark, tmp_path, engine):
    if engine == "spark":
        needs_connector()
    clean, out, version = prepared(spark, tmp_path)  # a table the delta-rs engine created
    job = Job(
        embed_args(clean, out, "--set", "spark.master=local[2]", "--set", f"delta.engine={engine}"), tmp_path
    )
    # a worker has just loaded its model for its task's first batch: kill now, while the tasks embed (their ~1,000
    # rows each take a second or two here; a pause after this line let a fast machine finish and commit first)
    job.wait_for("runs ELMo")
    job.kill_all()
    assert DeltaTable(str(out)).version() == version and len(ids_in(out)) == 20  # readers see nothing partial
    rerun_and_check(spark, clean, out, 2000, engine)


def test_kill_9_after_the_files_are_written_before_the_commit(spark, tmp_path):
    clean, out, version = prepared(spark, tmp_path, rows=300)
    job = Job(
        embed_args(clean, out, "--set", "spark.master=local[2]", "--set", "delta.engine=delta-rs"),
        tmp_path,
        ELMO_LAKE_PAUSE_BEFORE_COMMIT="600",
    )
    job.wait_for("pausing")
    job.kill_all()
    assert DeltaTable(str(out)).version() == version and len(ids_in(out)) == 20
    left = [p for p in out.rglob("*.parquet") if "_delta_log" not in p.parts]
    assert (out / "_elmo_lake_staging").exists() and len(
        left
    ) > 1  # the dead write's files are there, uncommitted
    rerun_and_check(spark, clean, out, 300)  # the next write removes them: staging max age 0 for the test


def test_a_killed_python_worker_is_retried_by_spark(spark, tmp_path):
    clean, out, _ = prepared(spark, tmp_path)
    job = Job(embed_args(clean, out, "--set", "spark.master=local[2,4]"), tmp_path)  # 4 attempts per task
    line = job.wait_for("runs ELMo")
    pid = int(line.split("worker ")[1].split()[0])
    os.kill(pid, signal.SIGKILL)  # mid-task: it has just loaded its model for the task's first batch
    output = job.finish()
    assert "embedded 1980 documents" in output and "(what the input gained in versions 1..1)" in output
    ids = ids_in(out)
    assert len(ids) == len(set(ids)) == 2000
    assert_no_orphans(out, "spark" if "the Delta connector" in output else "delta-rs")


def test_maintain_compacts_and_vacuums_without_changing_what_readers_see(spark, tmp_path):
    from jobs import maintain
    from jobs.lake.delta_tables import read_delta
    from jobs.platform.config import load_config

    table = tmp_path / "t"
    for start in range(0, 50, 10):  # five incremental appends: five small files
        clean_table(table, 10, start)
    before = sorted(r["id"] for r in read_delta(spark, str(table), "delta-rs").collect())
    cfg = load_config("local", ["delta.engine=delta-rs"])
    with pytest.raises(Exception, match="below the table's retention"):
        maintain.run(cfg, str(table), vacuum=True, retention_hours=1)
    report = maintain.run(cfg, str(table), optimize=True, vacuum=True)
    assert report.optimize["numFilesRemoved"] == 5 and report.optimize["numFilesAdded"] == 1
    assert report.vacuum_files == [] and not report.applied  # dry run; and nothing is old enough yet
    after_spark = sorted(r["id"] for r in read_delta(spark, str(table), "delta-rs").collect())
    after_rs = sorted(DeltaTable(str(table)).to_pyarrow_table(columns=["id"]).column("id").to_pylist())
    assert after_spark == after_rs == before
    DeltaTable(str(table)).alter.set_table_properties(
        {"delta.deletedFileRetentionDuration": "interval 0 hours"}
    )
    dry = maintain.run(cfg, str(table), vacuum=True)
    assert len(dry.vacuum_files) == 5 and len(list(table.glob("*.parquet"))) == 6
    applied = maintain.run(cfg, str(table), vacuum=True, apply=True)
    assert (
        sorted(applied.vacuum_files) == sorted(dry.vacuum_files) and len(list(table.glob("*.parquet"))) == 1
    )
    assert sorted(r["id"] for r in read_delta(spark, str(table), "delta-rs").collect()) == before
