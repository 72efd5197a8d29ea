"""The connector engine: Delta tables through the Delta Lake connector (``format("delta")``, SQL), nothing else.

The engine of Databricks and of clusters started with the connector's jars. Everything goes through the Spark
session, classic or Spark Connect, so the job's process never opens the table's files itself (the table may need
reader features delta-rs lacks, and a Connect client may not share the server's disk):

- a new table is one ``CREATE TABLE delta.`path` ... COMMENT ... AS SELECT`` commit (description, partitioning,
  column comments and data together);
- an incremental append is ``MERGE ... WHEN NOT MATCHED THEN INSERT *`` on the row key, which Delta's conflict
  detection covers; other appends and overwrites are Delta's own writes;
- versions, partition columns and statistics come from ``DESCRIBE HISTORY`` / ``DESCRIBE DETAIL``, compaction and
  clean-up are ``OPTIMIZE`` and ``VACUUM``;
- every commit carries ``userMetadata`` (the stage and model that wrote it), shown by ``DESCRIBE HISTORY``.

Jobs never import this module: they call ``jobs.lake.delta_tables``, which chooses the engine.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import contextmanager
from typing import TypeVar

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from jobs.platform.errors import CommitConflictError, SchemaMismatchError
from jobs.platform.paths import spark_path
from jobs.platform.table_names import ensure_schema, is_table_name, quoted, schema_of, sql_string

Result = TypeVar("Result")
USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"

# How the connector says "no Delta table there" (Delta 3/4, Databricks): anything else is a real failure.
_NOT_A_TABLE = (
    "DELTA_MISSING_DELTA_TABLE",
    "DELTA_PATH_DOES_NOT_EXIST",
    "PATH_NOT_FOUND",
    "is not a Delta table",
)
# How it says "someone else committed first" (ConcurrentAppendException and friends, or a table created first).
_CONFLICT = ("Concurrent", "DELTA_CONCURRENT", "DELTA_TABLE_ALREADY_EXISTS", "TABLE_OR_VIEW_ALREADY_EXISTS")


def identifier(path: str) -> str:
    """The SQL name of the table: delta.`path` for a path, `schema`.`table` for a catalog name."""
    if is_table_name(path):
        return quoted(path)
    return "delta.`" + spark_path(path).replace("`", "``") + "`"


def exists(spark: SparkSession, path: str) -> bool:
    if is_table_name(path):
        return spark.catalog.tableExists(path)
    try:
        spark.read.format("delta").load(spark_path(path)).schema  # noqa: B018  (analysis on schema access)
    except Exception as exc:
        if any(marker in str(exc) for marker in _NOT_A_TABLE):
            return False
        raise
    return True


def read(spark: SparkSession, path: str, version: int | None = None) -> DataFrame:
    if is_table_name(path):
        if version is None:
            return spark.read.table(path)
        return spark.sql(f"SELECT * FROM {quoted(path)} VERSION AS OF {int(version)}")
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(spark_path(path))


def last_commit(spark: SparkSession, path: str) -> Row | None:
    """The newest history row of the table (version, operation, operationMetrics, userMetadata, ...), or None."""
    rows = spark.sql(f"DESCRIBE HISTORY {identifier(path)} LIMIT 1").collect()
    return rows[0] if rows else None


def history(spark: SparkSession, path: str) -> list[Row]:
    """Every commit of the table, newest first."""
    return spark.sql(f"DESCRIBE HISTORY {identifier(path)}").collect()


def current_version(spark: SparkSession, path: str) -> int | None:
    last = last_commit(spark, path)
    return int(last["version"]) if last is not None else None


def detail(spark: SparkSession, path: str) -> Row:
    """DESCRIBE DETAIL: description, partitionColumns, numFiles, sizeInBytes, properties, tableFeatures, ..."""
    return spark.sql(f"DESCRIBE DETAIL {identifier(path)}").first()


def partition_columns(spark: SparkSession, path: str) -> list[str]:
    return list(detail(spark, path)["partitionColumns"] or [])


def is_conflict(exc: BaseException) -> bool:
    return any(marker in str(exc) for marker in _CONFLICT)


@contextmanager
def user_metadata(spark: SparkSession, text: str | None):
    """Commits made by SQL in this block carry ``text`` as their userMetadata (the session setting Delta reads)."""
    if not text:
        yield
        return
    spark.conf.set(USER_METADATA_CONF, text)
    try:
        yield
    finally:
        spark.conf.unset(USER_METADATA_CONF)


def write(
    df: DataFrame,
    path: str,
    mode: str,
    partition_by: list[str],
    exists: bool,
    description: str | None,
    metadata: str | None,
) -> tuple[int, int, int]:
    """Create the table (one CTAS commit) or append to / overwrite it: (version, files, rows) written."""
    spark = df.sparkSession
    df = plain_strings(df)
    if not exists:
        return _translate(path, lambda: _create_as_select(df, path, partition_by, description, metadata))
    if is_table_name(path):  # INSERT INTO/OVERWRITE by the table's column order: the table keeps its metadata
        ordered = df.select(*[f"`{c}`" for c in spark.read.table(path).columns])
        with user_metadata(spark, metadata):
            _translate(path, lambda: ordered.write.insertInto(path, overwrite=mode == "overwrite"))
        return _written(spark, path, "numFiles", "numOutputRows")
    writer = df.write.format("delta").mode(mode)
    if metadata:
        writer = writer.option("userMetadata", metadata)
    _translate(path, lambda: writer.save(spark_path(path)))
    return _written(spark, path, "numFiles", "numOutputRows")


def add_columns(spark: SparkSession, path: str, columns: list[tuple[str, str, str | None]]) -> None:
    """ALTER TABLE ... ADD COLUMNS: (name, Spark SQL type, comment) each, nullable."""
    parts = [
        f"`{name}` {kind}" + ("" if comment is None else f" COMMENT {sql_string(comment)}")
        for name, kind, comment in columns
    ]
    _translate(path, lambda: spark.sql(f"ALTER TABLE {identifier(path)} ADD COLUMNS ({', '.join(parts)})"))


def merge_new_rows(df: DataFrame, path: str, keys: list[str], metadata: str | None) -> tuple[int, int, int]:
    """Insert the rows whose key the table lacks. MERGE reads the table, so a concurrent commit is a conflict
    (ConcurrentAppendException) instead of a duplicate."""
    spark = df.sparkSession
    df = plain_strings(df)
    view = f"elmo_lake_new_rows_{uuid.uuid4().hex[:12]}"
    df.createOrReplaceTempView(view)  # a session-scoped temporary view: serverless allows these
    on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    statement = f"MERGE INTO {identifier(path)} t USING {view} s ON {on} WHEN NOT MATCHED THEN INSERT *"
    try:
        with user_metadata(spark, metadata):
            _translate(path, lambda: spark.sql(statement))
    finally:
        spark.catalog.dropTempView(view)
    return _written(spark, path, "numTargetFilesAdded", "numTargetRowsInserted")


def plain_strings(df: DataFrame) -> DataFrame:
    """String columns as plain ``string``. Over Spark Connect, a UDF's or mapInArrow's declared string columns
    come back with an explicit default collation, which Delta would store as "string collate UTF8_BINARY": a type
    delta-rs (and older readers) cannot read. A cast to the type's DDL name drops it; metadata (comments) stays."""
    columns = []
    changed = False
    for field in df.schema.fields:
        ddl = field.dataType.simpleString()
        if "string" in ddl:
            columns.append(F.col(f"`{field.name}`").cast(ddl).alias(field.name, metadata=field.metadata))
            changed = True
        else:
            columns.append(F.col(f"`{field.name}`"))
    return df.select(*columns) if changed else df


def _create_as_select(
    df: DataFrame, path: str, partition_by: list[str], description: str | None, metadata: str | None
) -> tuple[int, int, int]:
    spark = df.sparkSession
    view = f"elmo_lake_new_table_{uuid.uuid4().hex[:12]}"
    df.createOrReplaceTempView(view)
    clauses = ""
    if partition_by:
        clauses += " PARTITIONED BY (" + ", ".join(f"`{c}`" for c in partition_by) + ")"
    if description:
        clauses += f" COMMENT {sql_string(description)}"
    if is_table_name(path):  # a new name: a managed table of its schema, which is created if need be
        ensure_schema(spark, schema_of(path))
    try:
        with user_metadata(spark, metadata):
            spark.sql(f"CREATE TABLE {identifier(path)} USING delta{clauses} AS SELECT * FROM {view}")
    finally:
        spark.catalog.dropTempView(view)
    return _written(spark, path, "numFiles", "numOutputRows")


def _written(spark: SparkSession, path: str, files_key: str, rows_key: str) -> tuple[int, int, int]:
    last = last_commit(spark, path)
    metrics = last["operationMetrics"] or {}
    return int(last["version"]), int(metrics.get(files_key, 0)), int(metrics.get(rows_key, 0))


def _translate(path: str, action: Callable[[], Result]) -> Result:
    """The connector's exceptions are JVM classes known by their text: map the ones users act on."""
    try:
        return action()
    except Exception as exc:
        text = str(exc)
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        if is_conflict(exc):
            raise CommitConflictError(
                f"another writer committed to Delta table {path} first ({first}); nothing was written, re-run to "
                "write what is still missing"
            ) from exc
        if "DELTA_FAILED_TO_MERGE_FIELDS" in text or "schema mismatch" in text.lower():
            raise SchemaMismatchError(
                f"data does not match the schema of Delta table {path}: {first}"
            ) from exc
        raise


def optimize(spark: SparkSession, path: str) -> Row:
    """OPTIMIZE (bin-packing compaction): its metrics row (numFilesAdded, numFilesRemoved, ...)."""
    return spark.sql(f"OPTIMIZE {identifier(path)}").first()


def vacuum(spark: SparkSession, path: str, retain_hours: float, dry_run: bool) -> list[str]:
    """VACUUM: the files (no longer in any version within ``retain_hours``) deleted, or that would be."""
    hours = f"{retain_hours:g}"
    rows = spark.sql(
        f"VACUUM {identifier(path)} RETAIN {hours} HOURS" + (" DRY RUN" if dry_run else "")
    ).collect()
    return [r[0] for r in rows if r[0] and not str(r[0]).endswith(("_delta_log", "/"))]
