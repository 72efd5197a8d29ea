"""Incremental runs from the Delta log (jobs/lake/increments.py) on both engines: a run reads only what its input
gained since the last run, stays exactly-once when the input is compacted, vacuumed, overwritten or has rows
deleted between runs, and processes a new model's set in full."""

from __future__ import annotations

import json
import shutil

import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from jobs import embed as embed_job
from jobs.lake.delta_tables import has_delta_connector, read_delta, write_delta
from jobs.lake.increments import find_work
from jobs.platform.config import load_config
from tests.elmo_fixture import fixture_dir

CLEAN = "id string, clean_text string, tokens array<string>, empty boolean, clean_fingerprint string"
WORDS = "my new phone battery died again today love the camera screen is great".split()


@pytest.fixture(params=["delta-rs", "spark"], ids=["delta-rs", "connector"])
def engine(request, spark):
    if request.param == "spark" and not has_delta_connector(spark):
        pytest.skip("this session has no Delta connector (./setup.sh installs it)")
    return request.param


def cfg(engine: str, *more: str):
    return load_config("local", [f"delta.engine={engine}", "embed.partitions=2", *more])


def add_clean_rows(
    spark, path: str, engine: str, start: int, count: int, extra: tuple[str, ...] = ()
) -> None:
    rows = [
        (
            f"d{i}",
            "",
            [WORDS[(i * 5 + k) % len(WORDS)] for k in range(3 + i % 5)] + list(extra),
            False,
            "test",
        )
        for i in range(start, start + count)
    ]
    write_delta(spark.createDataFrame(rows, CLEAN).coalesce(1), path, mode="append", engine=engine)


def embedded_ids(spark, path: str, engine: str, pooling: str = "mean") -> list[str]:
    table = read_delta(spark, path, engine).where(F.col("pooling") == pooling)
    return sorted(r["id"] for r in table.select("id").collect())


def every_id_once(spark, path: str, engine: str, count: int, pooling: str = "mean") -> None:
    ids = embedded_ids(spark, path, engine, pooling)
    assert ids == sorted(f"d{i}" for i in range(count)), (len(ids), len(set(ids)), count)


def work(spark, clean: str, out: str, engine: str, lines: list[str] | None = None):
    model = embed_job.resolve_model(str(fixture_dir()), "tokens", spark, "numpy", "float32")
    return find_work(
        spark,
        cfg(engine),
        "embed",
        clean,
        out,
        stream={"model_id": model.model_id, "sets": "layer elmo, pooling mean"},
        log=(lines.append if lines is not None else None),
    )


def optimize(spark, path: str, engine: str) -> None:
    if engine == "spark":
        spark.sql(f"OPTIMIZE delta.`{path}`")
    else:
        DeltaTable(path).optimize.compact()


def run_embed(spark, clean: str, out: str, engine: str, **options):
    return embed_job.run(spark, cfg(engine), clean, out, str(fixture_dir()), **options)


def test_a_run_reads_only_what_the_input_gained_and_survives_compaction_vacuum_and_overwrite(
    spark, tmp_path, engine
):
    clean, out = str(tmp_path / "clean"), str(tmp_path / "emb")
    add_clean_rows(spark, clean, engine, 0, 30)
    add_clean_rows(spark, clean, engine, 30, 30)
    first = run_embed(spark, clean, out, engine)
    assert first.embedded == 60
    commit = json.loads(DeltaTable(out).history(1)[0]["userMetadata"])
    assert commit["input"] == clean and commit["input_version"] == DeltaTable(clean).version()

    # nothing new: no row read, nothing committed
    before = DeltaTable(out).version()
    nothing = work(spark, clean, out, engine)
    assert nothing.incremental and nothing.all_new and nothing.rows.count() == 0
    assert run_embed(spark, clean, out, engine).embedded == 0 and DeltaTable(out).version() == before

    # +3 rows: only they are read and embedded
    add_clean_rows(spark, clean, engine, 60, 3)
    gained = work(spark, clean, out, engine)
    assert gained.since == DeltaTable(clean).version() - 1
    assert sorted(r["id"] for r in gained.rows.collect()) == ["d60", "d61", "d62"]
    assert run_embed(spark, clean, out, engine).embedded == 3
    every_id_once(spark, out, engine, 63)

    # the old files compacted (OPTIMIZE changes no data), then vacuumed: still incremental, nothing new
    optimize(spark, clean, engine)
    DeltaTable(clean).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    after_compaction = work(spark, clean, out, engine)
    assert after_compaction.incremental and after_compaction.rows.count() == 0
    add_clean_rows(spark, clean, engine, 63, 2)
    assert run_embed(spark, clean, out, engine).embedded == 2
    every_id_once(spark, out, engine, 65)

    # new rows compacted before this stage saw them: the whole input is read, and said so
    add_clean_rows(spark, clean, engine, 65, 2)
    add_clean_rows(spark, clean, engine, 67, 2)
    optimize(spark, clean, engine)
    lines: list[str] = []
    compacted = work(spark, clean, out, engine, lines)
    assert not compacted.incremental and "compacted files holding rows this run has not read" in lines[0]
    assert run_embed(spark, clean, out, engine).embedded == 4
    every_id_once(spark, out, engine, 69)

    # the input overwritten with its rows and a few more: read whole, anti-joined, every id once
    everything = read_delta(spark, clean, engine).toPandas()
    write_delta(
        spark.createDataFrame(everything, CLEAN).unionByName(
            spark.createDataFrame([("d69", "", ["phone"], False, "test")], CLEAN)
        ),
        clean,
        mode="overwrite",
        engine=engine,
    )
    lines = []
    assert not work(spark, clean, out, engine, lines).incremental and "removed or rewritten" in lines[0]
    assert run_embed(spark, clean, out, engine).embedded == 1
    every_id_once(spark, out, engine, 70)
    assert work(spark, clean, out, engine).incremental  # that run's commit is the new starting point

    # a new set (another pooling) is other work: all of it, in full
    max_set = run_embed(spark, clean, out, engine, pooling="max")
    assert max_set.embedded == 70
    every_id_once(spark, out, engine, 70, "max")


def test_deleted_rows_and_a_cleaned_up_log_fall_back_to_the_whole_input(spark, tmp_path, engine):
    clean, out = str(tmp_path / "clean"), str(tmp_path / "emb")
    add_clean_rows(spark, clean, engine, 0, 10)
    run_embed(spark, clean, out, engine)
    if engine == "spark":  # with deletion vectors: the file stays, its row marked deleted
        spark.sql(f"ALTER TABLE delta.`{clean}` SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")
        spark.sql(f"DELETE FROM delta.`{clean}` WHERE id = 'd3'")
    else:
        DeltaTable(clean).delete("id = 'd3'")
    add_clean_rows(spark, clean, engine, 10, 2)
    lines: list[str] = []
    assert not work(spark, clean, out, engine, lines).incremental
    assert "deleted" in lines[0] or "removed" in lines[0], lines
    assert run_embed(spark, clean, out, engine).embedded == 2

    # the log entries after the last run's version cleaned up (as Delta does after a checkpoint)
    add_clean_rows(spark, clean, engine, 12, 2)
    add_clean_rows(spark, clean, engine, 14, 2)
    DeltaTable(clean).create_checkpoint()
    version = DeltaTable(clean).version()
    (tmp_path / "clean" / "_delta_log" / f"{version - 1:020d}.json").unlink()
    lines = []
    assert not work(spark, clean, out, engine, lines).incremental and "cleaned up" in lines[0], lines
    assert run_embed(spark, clean, out, engine).embedded == 4
    every_id_once(spark, out, engine, 16)

    # the input deleted and written anew under the same path: another table (id), read whole
    shutil.rmtree(tmp_path / "clean")
    add_clean_rows(spark, clean, engine, 14, 3)
    lines = []
    assert not work(spark, clean, out, engine, lines).incremental and "replaced" in lines[0], lines
    assert run_embed(spark, clean, out, engine).embedded == 1
    every_id_once(spark, out, engine, 17)


def test_a_failed_run_leaves_the_progress_where_it_was_and_the_next_run_does_its_work(
    spark, tmp_path, engine, monkeypatch
):
    """Killed or failed before its commit: no output, no progress; the next run reads the same increment."""
    clean, out = str(tmp_path / "clean"), str(tmp_path / "emb")
    add_clean_rows(spark, clean, engine, 0, 10)
    run_embed(spark, clean, out, engine)
    add_clean_rows(spark, clean, engine, 10, 5, extra=("poisoned",))
    monkeypatch.setenv("ELMO_LAKE_FAIL_EMBED", "poisoned")  # every new row fails: over max_reject_fraction
    before = DeltaTable(out).version()
    with pytest.raises(Exception, match="TooManyRowFailures|max_reject_fraction"):
        run_embed(spark, clean, out, engine)
    assert DeltaTable(out).version() == before
    monkeypatch.delenv("ELMO_LAKE_FAIL_EMBED")
    assert work(spark, clean, out, engine).rows.count() == 5
    assert run_embed(spark, clean, out, engine).embedded == 5
    every_id_once(spark, out, engine, 15)
