"""Read and write Delta tables from Spark: one surface, two engines, chosen once per session.

``read_delta`` and ``write_delta`` take the same arguments whichever engine runs them (``delta.engine``):

- ``spark`` — the Delta Lake connector (``jobs/lake/delta_connector_engine.py``): Databricks, clusters and local
  sessions with the connector's jars (./setup.sh installs them; ``auto`` picks it wherever Spark knows the
  ``delta`` source);
- ``delta-rs`` — plain Spark plus the ``deltalake`` package (``jobs/lake/delta_rs_engine.py``): sessions without the
  connector (air-gapped machines, Spark Connect servers without Delta).

Both write the same Delta tables, each readable and writable by the other. Jobs import this module (and, above
it, ``increments``, ``quarantine`` and ``embedding_sets``), never the engines.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import types as T

from jobs.lake import delta_connector_engine as connector
from jobs.lake import delta_rs_engine as delta_rs
from jobs.lake.delta_rs_engine import (  # noqa: F401  (part of this surface: maintain, sql and similar use them)
    DEFAULT_STAGING_MAX_AGE_HOURS,
    dead_writes,
    open_table_filesystem,
    remove_dead_writes,
    table_uri,
    table_version,
)
from jobs.platform.errors import (
    CommitConflictError,
    ElmoLakeError,
    SchemaMismatchError,
    SetupError,
    TableExistsError,
    TableNotFoundError,
)
from jobs.platform.table_names import is_table_name, refuse_on_delta_rs

Engine = Literal["delta-rs", "spark"]
Result = TypeVar("Result")
WriteMode = Literal["append", "overwrite", "error", "ignore"]
ENGINE_NAMES = {"spark": "the Delta connector", "delta-rs": "delta-rs"}
PARTITION_TYPES = (
    T.StringType,
    T.IntegerType,
    T.LongType,
    T.ShortType,
    T.ByteType,
    T.BooleanType,
    T.DateType,
)


@dataclass(frozen=True)
class WriteResult:
    """What a write did: the table version it produced (None if nothing was written) and how much."""

    path: str
    version: int | None
    num_files: int
    num_records: int


_ENGINES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # session -> its engine, decided once


def resolve_engine(spark: SparkSession, engine: str = "auto") -> Engine:
    """'auto' -> 'spark' when the session has the Delta connector (or on Databricks), else 'delta-rs', saying so
    once. 'spark' on a session without the connector is a SetupError naming what to do."""
    if engine not in ("auto", "delta-rs", "spark"):
        raise ElmoLakeError(f"delta.engine: {engine!r} is not allowed (allowed: 'auto', 'delta-rs', 'spark')")
    if engine == "delta-rs":
        return "delta-rs"
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return "spark"
    if spark not in _ENGINES:
        _ENGINES[spark] = "spark" if has_delta_connector(spark) else "delta-rs"
        if _ENGINES[spark] == "delta-rs" and engine == "auto":
            print(f"elmo-lake: {_without_connector_line(spark)}", file=sys.stderr, flush=True)
    if engine == "spark" and _ENGINES[spark] != "spark":
        raise SetupError(f"delta.engine is 'spark', but {_without_connector_line(spark)}")
    return _ENGINES[spark]


def _without_connector_line(spark: SparkSession) -> str:
    from jobs.platform.delta_connector_jars import not_installed_line
    from jobs.platform.session import is_connect

    if is_connect(spark):
        return (
            "the Spark Connect server has no Delta connector, so Delta tables are read and written with the "
            "delta-rs engine (this process and the server must share the tables' storage); start the server "
            "with the connector (python -m jobs.connect_server does, once ./setup.sh has fetched it)"
        )
    return not_installed_line()


def engine_name(spark: SparkSession, engine: str = "auto") -> str:
    """The engine in words, for the jobs' last lines and the report: 'the Delta connector' or 'delta-rs'."""
    return ENGINE_NAMES[resolve_engine(spark, engine)]


def has_delta_connector(spark: SparkSession) -> bool:
    """Does Spark know the ``delta`` source? Asked through the DataFrame API, so classic and Connect alike.

    Loading a path that does not exist fails either way; only the reason differs: no such source, or no table.
    """
    probe = f"/elmo-lake-delta-probe-{uuid.uuid4().hex}"
    try:
        spark.read.format("delta").load(probe).schema  # noqa: B018  (analysis happens on schema access)
    except Exception as exc:
        return "DATA_SOURCE_NOT_FOUND" not in str(exc) and "Failed to find the data source" not in str(exc)
    return True


def table_exists(spark: SparkSession, path: str, engine: str = "auto") -> bool:
    if resolve_engine(spark, engine) == "spark":
        return connector.exists(spark, path)
    if is_table_name(path):
        refuse_on_delta_rs(path)
    return delta_rs.exists(path)


def read_delta(spark: SparkSession, path: str, engine: str = "auto", version: int | None = None) -> DataFrame:
    """The table's current snapshot (or ``version``) as a DataFrame.

    Raises
    ------
    TableNotFoundError
        if there is no Delta table at ``path``.
    UnsupportedTableError
        (delta-rs engine) if the table needs a reader feature that engine cannot honour, e.g. deletion vectors.
    """
    if resolve_engine(spark, engine) == "spark":
        if not connector.exists(spark, path):
            raise TableNotFoundError(
                f"no table named {path}" if is_table_name(path) else f"no Delta table at {path}"
            )
        return connector.read(spark, path, version)
    if is_table_name(path):
        refuse_on_delta_rs(path)
    return delta_rs.read(spark, path, version)


def commit_metadata(stage: str, **facts: object) -> str:
    """The userMetadata of a stage's commits, as DESCRIBE HISTORY shows it: which run wrote what."""
    return json.dumps(
        {"writer": "elmo-lake", "stage": stage, **{k: v for k, v in facts.items() if v is not None}}
    )


def write_delta(
    df: DataFrame,
    path: str,
    mode: WriteMode = "error",
    partition_by: list[str] | tuple[str, ...] = (),
    engine: str = "auto",
    description: str | None = None,
    target_file_rows: int = 1_000_000,
    comments: dict[str, str] | None = None,
    read_version: int | None | Literal["any"] = "any",
    key_columns: list[str] | tuple[str, ...] = (),
    staging_max_age_hours: float = DEFAULT_STAGING_MAX_AGE_HOURS,
    user_metadata: str | None = None,
) -> WriteResult:
    """Write ``df`` to the Delta table at ``path`` in one transaction.

    Parameters
    ----------
    mode : 'append', 'overwrite', 'error' (fail if the table exists) or 'ignore' (do nothing if it exists).
    partition_by : partition columns; for an existing table, they must be the table's.
    description : the table's description (stored in its metadata when the table is created).
    comments : column comments, by column name (stored in the table's schema, shown by DESCRIBE).
    read_version : the version of ``path`` that ``df`` was computed from (e.g. "ids not in the table yet"), or
        None if it was computed when there was no table. The write then commits only on top of that version: if
        anyone committed since, it raises CommitConflictError and writes nothing (re-read and retry). 'any' (the
        default): a blind write, as Delta's own appends are.
    key_columns : (with read_version, connector engine) the columns that identify a row: the append is a MERGE
        that inserts only rows whose key is not in the table, so concurrent runs never duplicate a row.
    staging_max_age_hours : (delta-rs engine) staging folders of writes that have not changed for this long are
        dead writes (killed before their commit): this write removes them and any data file they had moved into
        the table without committing it.
    user_metadata : the commit's userMetadata (``commit_metadata``: the stage and model that wrote it), shown by
        DESCRIBE HISTORY on both engines.

    Raises
    ------
    TableExistsError, SchemaMismatchError, CommitConflictError
    """
    spark = df.sparkSession
    resolved = resolve_engine(spark, engine)
    partition_by = list(partition_by)
    if resolved == "spark":
        delta_rs.pause_before_commit(path, "snapshot read")  # (a debug setting; see there)
    exists = table_exists(spark, path, resolved)
    if read_version != "any":
        _check_still_at(spark, path, resolved, exists, read_version)
    if exists and mode == "error":
        raise TableExistsError(
            f"a Delta table already exists at {path} (write mode 'error'); choose another path"
        )
    if exists and mode == "ignore":
        return WriteResult(path, None, 0, 0)
    _check_partition_columns(df, partition_by, path)
    if exists:  # the engines directly: whether the table exists is known already
        on_connector = resolved == "spark"
        existing = (connector.read(spark, path) if on_connector else delta_rs.read(spark, path)).schema
        check_schema(existing, df.schema, path)
        table_partitions = (
            connector.partition_columns(spark, path) if on_connector else delta_rs.partition_columns(path)
        )
        if partition_by and table_partitions is not None and partition_by != table_partitions:
            raise SchemaMismatchError(
                f"Delta table {path} is partitioned by {table_partitions}, not {partition_by}; write with the "
                "table's partition columns or to a new table"
            )
        partition_by = table_partitions if table_partitions is not None else partition_by
    comments = comments or {}
    if resolved == "spark":
        for name, text in comments.items():
            df = df.withMetadata(name, {**df.schema[name].metadata, "comment": text})
        if read_version != "any" and exists and mode == "append" and key_columns:
            written = connector.merge_new_rows(df, path, list(key_columns), user_metadata)
        else:
            written = connector.write(df, path, mode, partition_by, exists, description, user_metadata)
    else:
        written = delta_rs.write(
            df,
            path,
            mode,
            partition_by,
            exists,
            description,
            target_file_rows,
            comments,
            read_version,
            staging_max_age_hours,
            user_metadata,
        )
    return WriteResult(path, *written)


def add_missing_columns(
    spark: SparkSession,
    path: str,
    engine: str,
    schema: T.StructType,
    comments: dict[str, str] | None = None,
) -> list[str]:
    """Add the columns of ``schema`` (the data a stage writes now) that the table at ``path`` lacks, as
    nullable columns (null in every existing row), with their comments: how a table written by an earlier
    elmo-lake gains a column a stage writes now. One commit (ALTER TABLE ... ADD COLUMNS); returns the names
    added."""
    resolved = resolve_engine(spark, engine)
    present = set(read_delta(spark, path, resolved).columns)
    missing = [
        (f.name, f.dataType.simpleString(), (comments or {}).get(f.name))
        for f in schema.fields
        if f.name not in present
    ]
    if missing:
        if resolved == "spark":
            connector.add_columns(spark, path, missing)
        else:
            delta_rs.add_columns(path, missing)
    return [name for name, _, _ in missing]


def append_on_snapshot(
    df: DataFrame, path: str, cfg, version: int | None, keys: list[str], description: str, **options
) -> WriteResult:
    """An incremental stage's append: ``df`` was computed from ``version`` of ``path`` (None: no table), so it
    commits on top of that version only (see ``write_delta``'s read_version), with the config's Delta settings."""
    return write_delta(
        df,
        path,
        mode="append",
        engine=cfg.delta.engine,
        description=description,
        target_file_rows=cfg.delta.target_file_rows,
        read_version=version,
        key_columns=keys,
        staging_max_age_hours=cfg.delta.staging_max_age_hours,
        **options,
    )


def retry_once_on_conflict(stage: str, table: str, attempt: Callable[[], Result]) -> Result:
    """Run a read-then-write ``attempt``; if another run committed to ``table`` in between, run it once more on
    the new snapshot (which computes only what is still missing). A second conflict is the user's to re-run."""
    try:
        return attempt()
    except CommitConflictError:
        from jobs.platform.cli import log

        log(
            stage,
            f"another run committed to {table} since this one read it: re-reading it, writing what is missing",
        )
        return attempt()


def _check_still_at(
    spark: SparkSession, path: str, engine: str, exists: bool, read_version: int | None
) -> None:
    """Fail early, before any data is computed, if the table moved on since the caller read it."""
    current = _current_version(spark, path, engine) if exists else None
    if current != read_version:
        raise CommitConflictError(
            f"another writer committed to Delta table {path} after this run read it (read "
            f"{'no table' if read_version is None else f'version {read_version}'}, now "
            f"{'no table' if current is None else f'version {current}'}); nothing was written, re-run to write "
            "what is still missing"
        )


def _current_version(spark: SparkSession, path: str, engine: str) -> int | None:
    return connector.current_version(spark, path) if engine == "spark" else table_version(path)


def partition_columns(spark: SparkSession, path: str, engine: str = "auto") -> list[str] | None:
    """The table's partition columns (None: no table), from the engine's own view of it."""
    resolved = resolve_engine(spark, engine)
    if resolved == "spark":
        return connector.partition_columns(spark, path) if connector.exists(spark, path) else None
    return delta_rs.partition_columns(path)


def snapshot_version(spark: SparkSession, path: str, engine: str = "auto") -> int | None:
    """The table's current version (None if there is no table): read at it, then write with read_version=it."""
    resolved = resolve_engine(spark, engine)
    return _current_version(spark, path, resolved) if table_exists(spark, path, resolved) else None


def rows_missing_from(
    spark: SparkSession,
    df: DataFrame,
    path: str,
    engine: str,
    keys: list[str],
    where: Column | None = None,
) -> tuple[DataFrame, int | None]:
    """The rows of ``df`` whose ``keys`` the table at ``path`` lacks (only its rows matching ``where`` count),
    and the version that was read: the ``read_version`` of the incremental write that appends them."""
    version = snapshot_version(spark, path, engine)
    if version is None:
        return df, None
    present = read_delta(spark, path, engine, version=version)
    if where is not None:
        present = present.where(where)
    return df.join(present.select(*keys), keys, "left_anti"), version


def _check_partition_columns(df: DataFrame, partition_by: list[str], path: str) -> None:
    for col in partition_by:
        if col not in df.columns:
            raise SchemaMismatchError(
                f"partition column {col!r} is not a column of the data for {path}: {df.columns}"
            )
        if not isinstance(df.schema[col].dataType, PARTITION_TYPES):
            raise SchemaMismatchError(
                f"partition column {col!r} has type {df.schema[col].dataType.simpleString()}; partition by a "
                "string, integer, boolean or date column"
            )


def check_schema(table: T.StructType, data: T.StructType, path: str) -> None:
    """Same column names and types as the table (nullability aside), or a SchemaMismatchError naming each."""
    table_types = {f.name: f.dataType for f in table.fields}
    data_types = {f.name: f.dataType for f in data.fields}
    problems = []
    for name, type_ in data_types.items():
        if name not in table_types:
            problems.append(f"column {name!r} ({type_.simpleString()}) is not in the table")
        elif table_types[name].simpleString() != type_.simpleString():  # nullability aside
            problems.append(
                f"column {name!r} is {type_.simpleString()}, the table has {table_types[name].simpleString()}"
            )
    problems += [f"column {name!r} is missing" for name in table_types if name not in data_types]
    if problems:
        raise SchemaMismatchError(
            f"data does not match the schema of Delta table {path}: " + "; ".join(problems)
        )
