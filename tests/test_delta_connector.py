"""The Delta Lake connector engine, and one table shared by the two engines: real local Spark with the connector's
jars (./setup.sh fetches them), real tables on disk, each engine reading what the other wrote."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from jobs.lake.delta_tables import (
    append_on_snapshot,
    commit_metadata,
    read_delta,
    resolve_engine,
    snapshot_version,
    write_delta,
)
from jobs.platform.errors import CommitConflictError, SchemaMismatchError, UnsupportedTableError
from tests.conftest import assert_same_embeddings

SCHEMA = "id string, n int, vec array<float>, at timestamp, part string"


@pytest.fixture(scope="module")
def connector(spark):
    """The shared session, which must have the connector (the tests' session gets it as the jobs' sessions do)."""
    from jobs.platform.delta_connector_jars import installed

    if installed() is None:
        pytest.skip(
            "the Delta connector's jars are not installed: run ./setup.sh where Maven Central is reachable"
        )
    assert resolve_engine(spark, "auto") == "spark"
    return spark


def rows(start: int, count: int, part: str = "a"):
    at = dt.datetime(2026, 1, 1, 12, 0, 0)
    return [
        (str(i), i, [float(i), 0.5], at + dt.timedelta(seconds=i), part) for i in range(start, start + count)
    ]


def ids(spark, path, engine, version=None):
    return sorted(r["id"] for r in read_delta(spark, path, engine, version=version).collect())


def history(spark, path):
    return spark.sql(f"DESCRIBE HISTORY delta.`{path}`").orderBy("version").collect()


def test_a_new_table_is_one_commit_with_description_comments_and_user_metadata(connector, tmp_path):
    spark, path = connector, str(tmp_path / "t")
    df = spark.createDataFrame(rows(0, 20), SCHEMA).repartition(2)
    result = write_delta(
        df,
        path,
        engine="spark",
        partition_by=["part"],
        description="test table: ids and vectors",
        comments={"id": "the row id", "vec": "a vector"},
        user_metadata=commit_metadata("embed", model_id="elmo-x"),
    )
    assert result.version == 0 and result.num_records == 20
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()
    assert detail["description"] == "test table: ids and vectors" and detail["partitionColumns"] == ["part"]
    described = {r["col_name"]: r["comment"] for r in spark.sql(f"DESCRIBE TABLE delta.`{path}`").collect()}
    assert described["id"] == "the row id" and described["vec"] == "a vector"
    (commit,) = history(spark, path)
    assert json.loads(commit["userMetadata"]) == {
        "writer": "elmo-lake",
        "stage": "embed",
        "model_id": "elmo-x",
    }
    assert "Delta-Lake/4.4" in commit["engineInfo"]  # written by the connector itself
    assert sorted(read_delta(spark, path, "spark").collect()) == sorted(df.collect())
    # delta-rs reads the connector's table: the same rows, description and comments
    table = DeltaTable(path)
    assert sorted(table.to_pyarrow_table().column("id").to_pylist()) == ids(spark, path, "spark")
    assert table.metadata().description == "test table: ids and vectors"
    assert json.loads(table.schema().to_json())["fields"][0]["metadata"] == {"comment": "the row id"}


@pytest.mark.parametrize("first,second", [("spark", "delta-rs"), ("delta-rs", "spark")])
def test_one_table_two_engines_each_reads_appends_and_overwrites_what_the_other_wrote(
    connector, tmp_path, first, second
):
    spark, path = connector, str(tmp_path / "t")
    meta = {"description": "shared table", "comments": {"n": "a number"}, "partition_by": ["part"]}
    write_delta(spark.createDataFrame(rows(0, 10), SCHEMA), path, engine=first, **meta)  # v0
    write_delta(spark.createDataFrame(rows(10, 5, "b"), SCHEMA), path, mode="append", engine=second)  # v1
    write_delta(spark.createDataFrame(rows(15, 5), SCHEMA), path, mode="append", engine=first)  # v2
    write_delta(spark.createDataFrame(rows(100, 3, "c"), SCHEMA), path, mode="overwrite", engine=second)  # v3
    expected = {
        0: [str(i) for i in range(10)],
        1: [str(i) for i in range(15)],
        2: [str(i) for i in range(20)],
        3: ["100", "101", "102"],
    }
    for engine in ("spark", "delta-rs"):
        for version, want in expected.items():
            assert ids(spark, path, engine, version) == sorted(want), (engine, version)
        assert ids(spark, path, engine) == sorted(expected[3])
        assert snapshot_version(spark, path, engine) == 3
    back = {e: read_delta(spark, path, e).orderBy("id").collect() for e in ("spark", "delta-rs")}
    assert back["spark"] == back["delta-rs"]  # every column, typed the same
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()
    assert detail["description"] == "shared table" and detail["partitionColumns"] == ["part"]
    assert DeltaTable(path).metadata().description == "shared table"
    described = {r["col_name"]: r["comment"] for r in spark.sql(f"DESCRIBE TABLE delta.`{path}`").collect()}
    assert described["n"] == "a number"


def test_tables_with_features_delta_rs_cannot_honour_are_read_on_the_connector(connector, tmp_path):
    spark = connector
    deletion_vectors, column_mapping = str(tmp_path / "dv"), str(tmp_path / "cm")
    spark.createDataFrame(rows(0, 20), SCHEMA).createOrReplaceTempView("source_rows")
    spark.sql(
        f"CREATE TABLE delta.`{deletion_vectors}` USING delta "
        "TBLPROPERTIES ('delta.enableDeletionVectors' = 'true') AS SELECT * FROM source_rows"
    )
    spark.sql(f"DELETE FROM delta.`{deletion_vectors}` WHERE n < 5")  # a deletion vector, no rewrite
    spark.sql(
        f"CREATE TABLE delta.`{column_mapping}` USING delta TBLPROPERTIES ('delta.columnMapping.mode' = 'name', "
        "'delta.minReaderVersion' = '2', 'delta.minWriterVersion' = '5') AS SELECT * FROM source_rows"
    )
    assert ids(spark, deletion_vectors, "spark") == sorted(str(i) for i in range(5, 20))
    assert ids(spark, column_mapping, "spark") == sorted(str(i) for i in range(20))
    for path in (deletion_vectors, column_mapping):
        with pytest.raises(UnsupportedTableError, match="delta.engine=spark"):
            read_delta(spark, path, "delta-rs")
    # and the connector appends to them as to any table
    append_on_snapshot(
        spark.createDataFrame(rows(0, 25), SCHEMA),
        deletion_vectors,
        _cfg("spark"),
        snapshot_version(spark, deletion_vectors, "spark"),
        ["id"],
        "dv table",
    )
    assert ids(spark, deletion_vectors, "spark") == sorted(str(i) for i in range(25))


@pytest.mark.parametrize("engine", ["spark", "delta-rs"])
def test_a_write_whose_schema_differs_names_the_columns_on_both_engines(connector, tmp_path, engine):
    spark, path = connector, str(tmp_path / "t")
    write_delta(spark.createDataFrame(rows(0, 3), SCHEMA), path, engine=engine)
    other = spark.createDataFrame(rows(3, 3), SCHEMA).withColumn("n", F.col("n").cast("string")).drop("at")
    with pytest.raises(SchemaMismatchError) as failure:
        write_delta(other, path, mode="append", engine=engine)
    assert "column 'n' is string, the table has int" in str(failure.value)
    assert "column 'at' is missing" in str(failure.value)
    assert snapshot_version(spark, path, engine) == 0


def test_setup_resolves_past_a_maven_home_that_holds_poms_without_jars(tmp_path, monkeypatch):
    """A ~/.m2 that names a module but lacks its jar (left by `mvn dependency:get` of another version) makes Spark's
    Ivy fail with "download failed"; the set-up's resolution tries once more from Maven Central alone."""
    from jobs.platform.delta_connector_jars import ResolutionError, resolve_packages, spark_home

    folder = (
        tmp_path / "home" / ".m2" / "repository" / "com" / "google" / "code" / "findbugs" / "jsr305" / "3.0.2"
    )
    folder.mkdir(parents=True)
    (folder / "jsr305-3.0.2.pom").write_text(
        "<project><modelVersion>4.0.0</modelVersion><groupId>com.google.code.findbugs</groupId>"
        "<artifactId>jsr305</artifactId><version>3.0.2</version></project>"
    )
    monkeypatch.setenv("JAVA_TOOL_OPTIONS", f"-Duser.home={tmp_path / 'home'}")  # Ivy's ~/.m2 is user.home's
    try:
        jars = resolve_packages(spark_home(), "com.google.code.findbugs:jsr305:3.0.2", tmp_path / "ivy")
    except ResolutionError as exc:
        if "download failed" in str(exc) or "local-m2-cache" in str(exc):
            raise
        pytest.skip(f"Maven Central is not reachable here: {exc}")
    assert [jar.name for jar in jars] == ["com.google.code.findbugs_jsr305-3.0.2.jar"]
    with pytest.raises(ResolutionError, match="not found"):  # Spark's own reason, in one line
        resolve_packages(spark_home(), "io.delta:no-such-artifact_2.13:0.0.1", tmp_path / "ivy")


def _cfg(engine: str):
    from jobs.platform.config import load_config

    return load_config("local", [f"delta.engine={engine}"])


def test_incremental_appends_merge_on_the_key_and_a_stale_snapshot_is_a_conflict(connector, tmp_path):
    spark, path = connector, str(tmp_path / "t")
    cfg = _cfg("spark")
    first = append_on_snapshot(
        spark.createDataFrame(rows(0, 10), SCHEMA),
        path,
        cfg,
        None,
        ["id"],
        "docs",
        user_metadata=commit_metadata("ingest"),
    )
    assert first.version == 0
    # an overlapping run appends rows 5..14 on top of version 0: a MERGE on the key adds only 10..14
    grown = append_on_snapshot(
        spark.createDataFrame(rows(5, 10), SCHEMA),
        path,
        cfg,
        0,
        ["id"],
        "docs",
        user_metadata=commit_metadata("ingest"),
    )
    assert grown.version == 1 and grown.num_records == 5
    assert ids(spark, path, "spark") == sorted(str(i) for i in range(15))
    assert history(spark, path)[1]["operation"] == "MERGE"
    with pytest.raises(CommitConflictError, match="after this run read it"):
        append_on_snapshot(spark.createDataFrame(rows(20, 1), SCHEMA), path, cfg, 0, ["id"], "docs")
    with pytest.raises(CommitConflictError):  # a table created by someone else since this run found none
        append_on_snapshot(spark.createDataFrame(rows(20, 1), SCHEMA), path, cfg, None, ["id"], "docs")
    assert snapshot_version(spark, path, "spark") == 1


def test_maintain_runs_the_connectors_optimize_and_vacuum(connector, tmp_path):
    from jobs import maintain

    spark, path = connector, str(tmp_path / "t")
    for start in range(0, 40, 10):  # four appends: four small files
        write_delta(
            spark.createDataFrame(rows(start, 10), SCHEMA).coalesce(1), path, mode="append", engine="spark"
        )
    cfg = _cfg("spark")
    report = maintain.run(cfg, path, optimize=True, vacuum=True, spark=spark)
    assert report.engine == "the Delta connector"
    assert report.optimize == {"numFilesAdded": 1, "numFilesRemoved": 4}
    assert history(spark, path)[-1]["operation"] == "OPTIMIZE"
    assert report.vacuum_files == [] and report.retention_hours == 168  # dry run; nothing old enough yet
    spark.sql(
        f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.deletedFileRetentionDuration' = 'interval 0 hours')"
    )
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        dry = maintain.run(cfg, path, vacuum=True, spark=spark)
        assert len(dry.vacuum_files) == 4
        maintain.run(cfg, path, vacuum=True, apply=True, spark=spark)
    finally:
        spark.conf.unset("spark.databricks.delta.retentionDurationCheck.enabled")
    assert len([p for p in (tmp_path / "t").glob("*.parquet")]) == 1
    assert ids(spark, path, "spark") == ids(spark, path, "delta-rs") == sorted(str(i) for i in range(40))


@pytest.mark.slow
def test_the_pipeline_on_both_engines_gives_the_same_tables(connector, launched_pipeline, tmp_path):
    """ingest -> clean -> embed -> train -> predict on the built-in sample, once per engine, into separate folders:
    on the connector, the README's main command as the launcher runs it (conftest's ``launched_pipeline``, shared
    with the Connect and SQL endpoint tests); on delta-rs, the same pipeline in process."""
    from jobs import pipeline
    from jobs.platform.config import load_config
    from jobs.platform.paths import default_model

    spark = connector
    work, launched, _ = launched_pipeline
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    outs = {"spark": work / "out" / "classic", "delta-rs": tmp_path / "delta-rs"}
    train_csv, score_csv = pipeline.sample_inputs()
    cfg = load_config("local", ["delta.engine=delta-rs", "train.select=false"])
    pipeline.run(spark, cfg, train_csv, score_csv, str(outs["delta-rs"]), default_model(), "sklearn")
    for engine, out in outs.items():
        report = json.loads((out / "report.json").read_text())
        assert report["delta_engine"] == {"spark": "the Delta connector", "delta-rs": "delta-rs"}[engine]
    commits = history(spark, str(outs["spark"] / "train_embeddings"))
    assert all("Delta-Lake/4.4" in c["engineInfo"] for c in commits)
    assert json.loads(commits[0]["userMetadata"])["stage"] == "embed"

    def table(engine, name):
        # the documents as the pipeline wrote them, version 0 (a SQL endpoint test appends two to the launched run's)
        version = 0 if name.endswith("_documents") else None
        rows = read_delta(spark, str(outs[engine] / name), engine, version=version).collect()
        return {r["id"]: r for r in rows}

    for name in ("train_documents", "score_documents"):
        a, b = table("spark", name), table("delta-rs", name)
        assert a.keys() == b.keys() and all(a[i]["text"] == b[i]["text"] for i in a)
    for name in ("train_clean", "score_clean"):
        a, b = table("spark", name), table("delta-rs", name)
        assert a.keys() == b.keys() and all(a[i]["tokens"] == b[i]["tokens"] for i in a)
    for name in ("train_embeddings", "score_embeddings"):
        a, b = table("spark", name), table("delta-rs", name)
        assert len(a) > 0
        assert_same_embeddings(a, b)
    a, b = table("spark", "predictions"), table("delta-rs", "predictions")
    assert a.keys() == b.keys() and all(a[i]["label"] == b[i]["label"] for i in a)
    assert (outs["spark"] / "predictions.csv").read_text() == (
        outs["delta-rs"] / "predictions.csv"
    ).read_text()
