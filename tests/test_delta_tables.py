"""The delta-rs engine: real local Spark, real tables on disk, read back by deltalake (the connector engine and the
two engines on one table: tests/test_delta_connector.py)."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.lake.delta_tables import read_delta, resolve_engine, table_version, write_delta
from jobs.platform.errors import (
    CommitConflictError,
    SchemaMismatchError,
    TableExistsError,
    TableNotFoundError,
    UnsupportedTableError,
)

ENGINE = "delta-rs"
SCHEMA = "id string, n int, score double, tags array<string>, vec array<float>, at timestamp, part string"


def rows(start: int, count: int, part: str = "a"):
    at = dt.datetime(2026, 1, 1, 12, 0, 0)
    return [
        (str(i), i, i / 2, [f"t{i}", "x"], [float(i), 0.5], at + dt.timedelta(seconds=i), part)
        for i in range(start, start + count)
    ]


def data_files(path):
    return sorted(
        os.path.relpath(os.path.join(d, f), path)
        for d, _, fs in os.walk(path)
        for f in fs
        if f.endswith(".parquet")
    )


def test_auto_means_the_connector_where_installed_else_delta_rs(spark):
    from jobs.platform.delta_connector_jars import installed

    assert resolve_engine(spark, "auto") == ("spark" if installed() else "delta-rs")
    assert resolve_engine(spark, "delta-rs") == "delta-rs"


def test_round_trip_spark_writes_spark_and_deltalake_read_the_same(spark, tmp_path):
    path = str(tmp_path / "t")
    df = spark.createDataFrame(rows(0, 50), SCHEMA).repartition(3)
    result = write_delta(df, path, engine=ENGINE)
    assert result.version == 0 and result.num_records == 50 and result.num_files == 3

    back = read_delta(spark, path, engine=ENGINE)
    assert back.schema.simpleString() == df.schema.simpleString()
    assert sorted(back.collect()) == sorted(df.collect())

    direct = DeltaTable(path).to_pyarrow_table().sort_by("n").to_pylist()
    assert [r["id"] for r in direct] == [str(i) for i in range(50)]
    assert direct[7]["vec"] == [7.0, 0.5] and direct[7]["tags"] == ["t7", "x"]
    assert direct[7]["at"] == dt.datetime(2026, 1, 1, 12, 0, 7, tzinfo=dt.timezone.utc)


def test_append_overwrite_error_and_ignore_modes(spark, tmp_path):
    path = str(tmp_path / "t")
    write_delta(spark.createDataFrame(rows(0, 10), SCHEMA), path, engine=ENGINE)
    write_delta(spark.createDataFrame(rows(10, 5), SCHEMA), path, mode="append", engine=ENGINE)
    assert read_delta(spark, path, engine=ENGINE).count() == 15 and table_version(path) == 1

    with pytest.raises(TableExistsError, match="already exists"):
        write_delta(spark.createDataFrame(rows(0, 1), SCHEMA), path, mode="error", engine=ENGINE)
    ignored = write_delta(spark.createDataFrame(rows(0, 1), SCHEMA), path, mode="ignore", engine=ENGINE)
    assert ignored.version is None and table_version(path) == 1

    write_delta(spark.createDataFrame(rows(100, 3), SCHEMA), path, mode="overwrite", engine=ENGINE)
    assert sorted(r.n for r in read_delta(spark, path, engine=ENGINE).collect()) == [100, 101, 102]
    assert DeltaTable(path).to_pyarrow_table().num_rows == 3
    # Time travel still sees the old snapshot: overwrite removed files from the log, not from history.
    assert read_delta(spark, path, engine=ENGINE, version=1).count() == 15


def test_partitioned_write_uses_hive_folders_and_reads_back_typed(spark, tmp_path):
    path = str(tmp_path / "t")
    df = spark.createDataFrame(rows(0, 6, "a") + rows(6, 4, "b/c=d") + rows(10, 2, None), SCHEMA)
    write_delta(df.repartition(2), path, partition_by=["part"], engine=ENGINE)
    files = data_files(path)
    assert {f.split("/")[0] for f in files} == {"part=a", "part=b%2Fc%3Dd", "part=__HIVE_DEFAULT_PARTITION__"}
    assert DeltaTable(path).metadata().partition_columns == ["part"]

    back = read_delta(spark, path, engine=ENGINE)
    assert back.columns == df.columns
    counts = {r["part"]: r["count"] for r in back.groupBy("part").count().collect()}
    assert counts == {"a": 6, "b/c=d": 4, None: 2}
    by_rs = (
        pa.table(DeltaTable(path).to_pyarrow_table()).group_by("part").aggregate([("n", "count")]).to_pylist()
    )
    assert {r["part"]: r["n_count"] for r in by_rs} == counts

    # Appending keeps the table's partitioning; asking for another one is refused.
    write_delta(spark.createDataFrame(rows(20, 2, "a"), SCHEMA), path, mode="append", engine=ENGINE)
    assert read_delta(spark, path, engine=ENGINE).where("part = 'a'").count() == 8
    with pytest.raises(SchemaMismatchError, match=r"partitioned by \['part'\], not \['id'\]"):
        write_delta(
            spark.createDataFrame(rows(30, 1), SCHEMA),
            path,
            mode="append",
            partition_by=["id"],
            engine=ENGINE,
        )


def test_reads_tables_that_delta_rs_itself_wrote_partitioned_by_int(spark, tmp_path):
    path = str(tmp_path / "t")
    table = pa.table({"id": ["x", "y", "z"], "year": pa.array([2024, 2025, 2025], pa.int32())})
    write_deltalake(path, table, partition_by=["year"])
    back = read_delta(spark, path, engine=ENGINE)
    assert back.schema["year"].dataType == T.IntegerType()
    assert sorted((r.id, r.year) for r in back.collect()) == [("x", 2024), ("y", 2025), ("z", 2025)]


def test_a_task_that_fails_mid_write_leaves_the_table_as_it_was(spark, tmp_path):
    path = str(tmp_path / "t")
    write_delta(spark.createDataFrame(rows(0, 10), SCHEMA), path, engine=ENGINE)
    before = data_files(path)

    @F.udf("int")
    def explode_on_13(n):
        if n == 13:
            raise ValueError("row 13 is poisoned")
        return n

    poisoned = spark.createDataFrame(rows(10, 20), SCHEMA).repartition(4).withColumn("n", explode_on_13("n"))
    with pytest.raises(Exception, match="row 13 is poisoned"):
        write_delta(poisoned, path, mode="append", engine=ENGINE)
    assert table_version(path) == 0
    assert read_delta(spark, path, engine=ENGINE).count() == 10
    assert DeltaTable(path).to_pyarrow_table().num_rows == 10
    assert data_files(path) == before  # the failed write's files are gone, whichever tasks wrote them


def test_a_failed_write_cleans_up_only_after_its_other_tasks_have_stopped(spark, tmp_path):
    # Spark fails the job as soon as one task fails and does not wait for the others: one still running could
    # write into the staging folder after the clean-up (seen once on a loaded machine). The write waits for them.
    path = str(tmp_path / "t")
    marker = tmp_path / "slow task ended"
    write_delta(spark.createDataFrame(rows(0, 10), SCHEMA), path, engine=ENGINE)
    before = data_files(path)

    @F.udf("int")
    def slow_or_poisoned(n):
        if n == 13:
            raise ValueError("row 13 is poisoned")
        if n == 10:
            time.sleep(2)  # this task is still running when the job fails
            marker.touch()
        return n

    two = spark.createDataFrame(rows(10, 4), SCHEMA).where("n in (10, 13)").repartitionByRange(2, "n")
    one_each = two.withColumn("n", slow_or_poisoned("n"))  # one task per row
    with pytest.raises(Exception, match="row 13 is poisoned"):
        write_delta(one_each, path, mode="append", engine=ENGINE)
    ended = marker.exists()
    # or Spark stopped it: a task killed with its job has its Python worker killed after spark.python.task.killTimeout
    # (2 s, as long as the sleep), so under load it may never end. Either way it must not run on past the return:
    time.sleep(3)
    assert ended or not marker.exists(), "the failed write returned while one of its tasks was still running"
    assert data_files(path) == before
    assert not (tmp_path / "t" / "_elmo_lake_staging").exists()


def test_racing_writers_the_loser_gets_a_conflict_and_the_table_stays_whole(spark, tmp_path):
    path = str(tmp_path / "t")
    write_delta(spark.createDataFrame(rows(0, 5), SCHEMA), path, engine=ENGINE)
    first_files = data_files(path)
    go = tmp_path / "winner-committed"
    writing = tmp_path / "slow-writer-is-writing"

    @F.udf("int")
    def wait_for_winner(n):
        writing.touch()  # its read version is fixed before any task runs
        deadline = time.time() + 60
        while not go.exists() and time.time() < deadline:
            time.sleep(0.05)
        return n

    # One partition: the slow write holds one core and leaves the other to the winner.
    slow = spark.createDataFrame(rows(100, 5), SCHEMA).coalesce(1).withColumn("n", wait_for_winner("n"))
    outcome = {}

    def slow_writer():
        try:
            outcome["slow"] = write_delta(slow, path, mode="overwrite", engine=ENGINE)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["slow"] = exc

    thread = threading.Thread(target=slow_writer)
    thread.start()
    deadline = time.time() + 60
    while not writing.exists() and time.time() < deadline:  # the slow writer is writing its files
        time.sleep(0.05)
    winner = write_delta(spark.createDataFrame(rows(200, 5), SCHEMA), path, mode="overwrite", engine=ENGINE)
    go.touch()
    thread.join(120)

    assert winner.version == 1
    assert isinstance(outcome["slow"], CommitConflictError), outcome["slow"]
    assert "another writer committed" in str(outcome["slow"])
    assert table_version(path) == 1
    assert sorted(r.n for r in read_delta(spark, path, engine=ENGINE).collect()) == list(range(200, 205))
    winner_files = [os.path.relpath(f, path) for f in DeltaTable(path).file_uris()]
    assert data_files(path) == sorted(first_files + winner_files)  # the loser's files were removed


def test_schema_mismatch_names_each_column(spark, tmp_path):
    path = str(tmp_path / "t")
    write_delta(spark.createDataFrame(rows(0, 3), SCHEMA), path, engine=ENGINE)
    other = spark.createDataFrame(rows(0, 3), SCHEMA).withColumn("n", F.col("n").cast("string")).drop("tags")
    other = other.withColumn("extra", F.lit(1))
    with pytest.raises(SchemaMismatchError) as info:
        write_delta(other, path, mode="append", engine=ENGINE)
    message = str(info.value)
    assert "column 'n' is string, the table has int" in message
    assert "column 'extra' (int) is not in the table" in message
    assert "column 'tags' is missing" in message
    assert table_version(path) == 0


def test_missing_table_and_tables_needing_unsupported_features_are_refused(spark, tmp_path):
    with pytest.raises(TableNotFoundError, match="no Delta table at"):
        read_delta(spark, str(tmp_path / "nothing"), engine=ENGINE)
    path = str(tmp_path / "dv")
    write_deltalake(path, pa.table({"id": ["a"]}), configuration={"delta.enableDeletionVectors": "true"})
    assert "deletionVectors" in (DeltaTable(path).protocol().reader_features or [])
    with pytest.raises(UnsupportedTableError, match="deletionVectors.*delta.engine=spark"):
        read_delta(spark, path, engine=ENGINE)


def test_empty_writes_create_an_empty_table_with_the_schema(spark, tmp_path):
    path = str(tmp_path / "t")
    write_delta(spark.createDataFrame([], SCHEMA), path, engine=ENGINE)
    back = read_delta(spark, path, engine=ENGINE)
    assert back.count() == 0 and back.columns == ["id", "n", "score", "tags", "vec", "at", "part"]
