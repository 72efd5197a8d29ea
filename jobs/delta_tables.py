"""Read and write Delta tables from Spark, through the Delta connector or, where it is absent, through delta-rs.

``read_delta`` and ``write_delta`` take the same arguments whichever engine runs them:

- ``spark``: the native ``format("delta")`` (Databricks, clusters with the connector on the classpath);
- ``delta-rs``: plain Spark. Reads list the current snapshot's data files with ``deltalake`` and read them as
  Parquet; writes let every task write its own Parquet files into the table's folder, then the driver commits all
  of them in ONE Delta transaction. Until that commit nothing is visible; if any task or the commit fails, the
  write's files are removed and the table stays at its previous version.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

from jobs.errors import (
    CommitConflictError,
    ElmoLakeError,
    SchemaMismatchError,
    TableExistsError,
    TableNotFoundError,
    UnsupportedTableError,
)

Engine = Literal["delta-rs", "spark"]
WriteMode = Literal["append", "overwrite", "error", "ignore"]

# Reader features the delta-rs read path honours; a table needing any other one is refused.
SUPPORTED_READER_FEATURES = {"timestampNtz", "v2Checkpoint", "vacuumProtocolCheck"}
STAGING_DIR = "_elmo_lake_staging"  # '_' folders are invisible to Delta and Spark readers
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
# Characters Hive (and so Spark and delta-rs) escape in partition folder names.
_PATH_UNSAFE = set("\"#%'*/:=?\\\x7f{[]^") | {chr(c) for c in range(0x20)}
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


def open_table_filesystem(uri: str):
    """The pyarrow filesystem and root path of a table URI (local path, file://, s3://, gs://, abfss://, hdfs://)."""
    import pyarrow.fs as pafs

    if "://" not in uri:
        return pafs.LocalFileSystem(), uri
    return pafs.FileSystem.from_uri(uri)


def to_delta_arrow_schema(schema: pa.Schema) -> pa.Schema:
    """What the Delta log holds: UTC timestamps, every top-level column nullable."""
    fields = []
    for field in schema:
        type_ = field.type
        if pa.types.is_timestamp(type_) and type_.tz is not None:
            type_ = pa.timestamp("us", tz="UTC")
        fields.append(pa.field(field.name, type_, nullable=True, metadata=field.metadata))
    return pa.schema(fields, metadata=schema.metadata)


def partition_dir(partition_by: list[str], values: dict[str, str | None]) -> str:
    """Hive-style folders of a partition: col=escaped value/..., as Spark and delta-rs write them."""
    parts = []
    for col in partition_by:
        value = values[col]
        escaped = (
            HIVE_NULL
            if value is None
            else "".join(quote(ch, safe="") if ch in _PATH_UNSAFE else ch for ch in value)
        )
        parts.append(f"{col}={escaped}")
    return "/".join(parts)


def resolve_engine(spark: SparkSession, engine: str = "auto") -> Engine:
    """'auto' -> 'spark' when the Delta connector is on the classpath (or on Databricks), else 'delta-rs'."""
    if engine in ("delta-rs", "spark"):
        return engine  # type: ignore[return-value]
    if engine != "auto":
        raise ElmoLakeError(f"delta.engine: {engine!r} is not allowed (allowed: 'auto', 'delta-rs', 'spark')")
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return "spark"
    try:
        spark._jvm.java.lang.Class.forName("org.apache.spark.sql.delta.sources.DeltaDataSource")  # type: ignore[union-attr]
        return "spark"
    except Exception:
        return "delta-rs"


def table_uri(path: str) -> str:
    """A path as delta-rs wants it: absolute local paths, URIs for object stores, /dbfs for DBFS."""
    path = str(path)
    if path.startswith("file://"):
        path = path[len("file://") :]
    elif path.startswith("file:"):
        path = path[len("file:") :]
    elif path.startswith("dbfs:/"):
        path = "/dbfs/" + path[len("dbfs:/") :].lstrip("/")
    if "://" in path:
        return path.rstrip("/")
    return os.path.abspath(path)


def table_exists(spark: SparkSession, path: str, engine: str = "auto") -> bool:
    if resolve_engine(spark, engine) == "spark":
        from delta.tables import DeltaTable as SparkDeltaTable

        return SparkDeltaTable.isDeltaTable(spark, path)
    from deltalake import DeltaTable

    return DeltaTable.is_deltatable(table_uri(path))


def table_version(path: str) -> int | None:
    """The current version of a Delta table (read from its log, either engine), or None if there is none."""
    from deltalake import DeltaTable

    uri = table_uri(path)
    return DeltaTable(uri).version() if DeltaTable.is_deltatable(uri) else None


def read_delta(spark: SparkSession, path: str, engine: str = "auto", version: int | None = None) -> DataFrame:
    """The table's current snapshot (or ``version``) as a DataFrame.

    Raises
    ------
    TableNotFoundError
        if there is no Delta table at ``path``.
    UnsupportedTableError
        (delta-rs engine) if the table needs a reader feature this path cannot honour, e.g. deletion vectors.
    """
    if resolve_engine(spark, engine) == "spark":
        if not table_exists(spark, path, "spark"):
            raise TableNotFoundError(f"no Delta table at {path}")
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(path)
    return _read_with_delta_rs(spark, path, version)


def _open_delta_rs_table(path: str, version: int | None = None):
    from deltalake import DeltaTable

    uri = table_uri(path)
    if not DeltaTable.is_deltatable(uri):
        raise TableNotFoundError(f"no Delta table at {path}")
    return DeltaTable(uri, version=version)


def _check_readable(dt, path: str) -> None:
    protocol = dt.protocol()
    features = set(protocol.reader_features or [])
    if protocol.min_reader_version == 2:
        raise UnsupportedTableError(
            f"Delta table {path} uses column mapping (reader version 2), which the delta-rs engine does not "
            "read; use the Delta connector (--set delta.engine=spark)"
        )
    if protocol.min_reader_version > 3 or not features <= SUPPORTED_READER_FEATURES:
        unsupported = sorted(features - SUPPORTED_READER_FEATURES) or [
            f"reader version {protocol.min_reader_version}"
        ]
        raise UnsupportedTableError(
            f"Delta table {path} needs reader feature(s) {', '.join(unsupported)}, which the delta-rs engine "
            "cannot honour (it would return wrong rows); use the Delta connector (--set delta.engine=spark) or "
            "rewrite the table without them"
        )


def _read_with_delta_rs(spark: SparkSession, path: str, version: int | None) -> DataFrame:
    dt = _open_delta_rs_table(path, version)
    _check_readable(dt, path)
    arrow_schema = pa.schema(dt.schema().to_arrow())
    spark_schema = from_arrow_schema(arrow_schema, prefer_timestamp_ntz=False)
    columns = [f.name for f in spark_schema.fields]
    partition_by = list(dt.metadata().partition_columns)
    adds = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
    if not adds:
        return spark.createDataFrame([], spark_schema)
    root = table_uri(path)
    for add in adds:  # the log holds URL-encoded relative paths; the files have the decoded names
        add["path"] = unquote(add["path"])
    files = [f"{root}/{a['path']}" for a in adds]
    if not partition_by:
        return spark.read.schema(spark_schema).parquet(*files).select(*columns)
    values = [{c: a.get(f"partition.{c}") for c in partition_by} for a in adds]
    values = [{c: (None if v is None else str(v)) for c, v in row.items()} for row in values]
    if all(
        a["path"].startswith(partition_dir(partition_by, v) + "/") for a, v in zip(adds, values, strict=True)
    ):
        # Hive-style folders that match the log: Spark parses the partition values from the paths.
        return spark.read.schema(spark_schema).option("basePath", root).parquet(*files).select(*columns)
    # Files placed elsewhere (other writers may): take the values from the log, one read per partition.
    data_schema = T.StructType([f for f in spark_schema.fields if f.name not in partition_by])
    groups: dict[tuple, list[str]] = {}
    for file, row in zip(files, values, strict=True):
        groups.setdefault(tuple(row[c] for c in partition_by), []).append(file)
    frames = []
    for key, group_files in groups.items():
        frame = spark.read.schema(data_schema).parquet(*group_files)
        for col, value in zip(partition_by, key, strict=True):
            frame = frame.withColumn(col, F.lit(value).cast(spark_schema[col].dataType))
        frames.append(frame.select(*columns))
    result = frames[0]
    for frame in frames[1:]:
        result = result.unionByName(frame)
    return result


def write_delta(
    df: DataFrame,
    path: str,
    mode: WriteMode = "error",
    partition_by: list[str] | tuple[str, ...] = (),
    engine: str = "auto",
    description: str | None = None,
    target_file_rows: int = 1_000_000,
    comments: dict[str, str] | None = None,
) -> WriteResult:
    """Write ``df`` to the Delta table at ``path`` in one transaction.

    Parameters
    ----------
    mode : 'append', 'overwrite', 'error' (fail if the table exists) or 'ignore' (do nothing if it exists).
    partition_by : partition columns; for an existing table, they must be the table's.
    description : the table's description (stored in its metadata when the table is created).
    comments : column comments, by column name (stored in the table's schema, shown by DESCRIBE).

    Raises
    ------
    TableExistsError, SchemaMismatchError, CommitConflictError
    """
    spark = df.sparkSession
    resolved = resolve_engine(spark, engine)
    partition_by = list(partition_by)
    exists = table_exists(spark, path, resolved)
    if exists and mode == "error":
        raise TableExistsError(
            f"a Delta table already exists at {path} (write mode 'error'); choose another path"
        )
    if exists and mode == "ignore":
        return WriteResult(path, None, 0, 0)
    _check_partition_columns(df, partition_by, path)
    if exists:
        existing = read_delta(spark, path, resolved).schema
        check_schema(existing, df.schema, path)
        table_partitions = _table_partition_columns(path)
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
        return _write_with_spark(df, path, mode, partition_by, description)
    return _write_with_delta_rs(df, path, mode, partition_by, exists, description, target_file_rows, comments)


def _table_partition_columns(path: str) -> list[str] | None:
    from deltalake import DeltaTable

    uri = table_uri(path)
    if not DeltaTable.is_deltatable(uri):
        return None
    return list(DeltaTable(uri).metadata().partition_columns)


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


def _write_with_spark(
    df: DataFrame, path: str, mode: str, partition_by: list[str], description: str | None
) -> WriteResult:
    writer = df.write.format("delta").mode("errorifexists" if mode == "error" else mode)
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    if description:
        writer = writer.option("userMetadata", description)
    try:
        writer.save(path)
    except Exception as exc:  # the connector's exceptions are JVM classes; map the ones users act on
        text = str(exc)
        if "Concurrent" in text or "DELTA_CONCURRENT" in text:
            raise CommitConflictError(
                f"another writer committed to {path} first: {text.splitlines()[0]}"
            ) from exc
        if "DELTA_FAILED_TO_MERGE_FIELDS" in text or "schema mismatch" in text.lower():
            raise SchemaMismatchError(
                f"data does not match the schema of Delta table {path}: {text.splitlines()[0]}"
            ) from exc
        raise
    from delta.tables import DeltaTable as SparkDeltaTable

    last = SparkDeltaTable.forPath(df.sparkSession, path).history(1).collect()[0]
    metrics = last["operationMetrics"] or {}
    return WriteResult(
        path, int(last["version"]), int(metrics.get("numFiles", 0)), int(metrics.get("numOutputRows", 0))
    )


def _write_with_delta_rs(
    df: DataFrame,
    path: str,
    mode: str,
    partition_by: list[str],
    exists: bool,
    description: str | None,
    target_file_rows: int,
    comments: dict[str, str],
) -> WriteResult:
    from deltalake import DeltaTable, Schema
    from deltalake.exceptions import CommitFailedError, DeltaError
    from deltalake.transaction import CommitProperties, create_table_with_add_actions

    uri = table_uri(path)
    # Read version fixed before any data is written: a commit by someone else since then is a conflict.
    read_version = DeltaTable(uri).version() if exists else None
    arrow_schema = to_delta_arrow_schema(to_arrow_schema(df.schema, timezone="UTC"))
    write_id = uuid.uuid4().hex[:16]
    fs, root = open_table_filesystem(uri)
    staging = f"{root}/{STAGING_DIR}/{write_id}"
    moved: list[str] = []
    try:
        _write_parquet(df, _spark_path(uri, f"{STAGING_DIR}/{write_id}"), partition_by, target_file_rows)
        adds = _move_into_table(fs, root, staging, write_id, moved)
        props = CommitProperties(custom_metadata={"engineInfo.elmo-lake": "delta-rs", "writeId": write_id})
        schema = Schema.from_arrow(_with_comments(arrow_schema, comments))
        if exists:
            DeltaTable(uri, version=read_version).create_write_transaction(
                adds, mode, schema, partition_by=partition_by or None, commit_properties=props
            )
        else:
            create_table_with_add_actions(
                uri,
                schema,
                adds,
                mode="error",
                partition_by=partition_by or None,
                description=description,
                commit_properties=props,
            )
    except BaseException as exc:
        for file in moved:  # never committed, so never visible; remove them all the same
            _delete_quietly(fs, file)
        if isinstance(exc, CommitFailedError) or (
            isinstance(exc, DeltaError) and "already exists" in str(exc)
        ):
            raise CommitConflictError(
                f"another writer committed to Delta table {path} after this write started (read version "
                f"{read_version}); nothing was written, re-run to write on top of the new version ({exc})"
            ) from None
        raise
    finally:
        _delete_quietly(fs, staging, folder=True)
        _delete_quietly(fs, f"{root}/{STAGING_DIR}", folder=True, only_if_empty=True)
    version = DeltaTable(uri).version()
    return WriteResult(path, version, len(adds), sum(json.loads(a.stats)["numRecords"] for a in adds))


def _write_parquet(df: DataFrame, target: str, partition_by: list[str], target_file_rows: int) -> None:
    """Spark's own Parquet writer (no Python on the write path), with the timestamp encoding Delta reads."""
    spark = df.sparkSession
    key = "spark.sql.parquet.outputTimestampType"
    previous = spark.conf.get(key, None)
    spark.conf.set(key, "TIMESTAMP_MICROS")
    try:
        writer = df.write.mode("errorifexists").option("compression", "snappy")
        if target_file_rows:
            writer = writer.option("maxRecordsPerFile", target_file_rows)
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        writer.parquet(target)
    finally:
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)


def _spark_path(uri: str, relative: str) -> str:
    return f"file://{uri}/{relative}" if "://" not in uri else f"{uri}/{relative}"


def _move_into_table(fs, root: str, staging: str, write_id: str, moved: list[str]):
    """Move the staged data files to their place in the table; their add actions (path, partitions, rows)."""
    import time

    import pyarrow.fs as pafs
    import pyarrow.parquet as pq
    from deltalake.transaction import AddAction

    adds = []
    infos = fs.get_file_info(pafs.FileSelector(staging, recursive=True))
    for info in sorted(infos, key=lambda i: i.path):
        if info.type != pafs.FileType.File or not info.base_name.endswith(".parquet"):
            continue
        relative = info.path[len(staging) + 1 :]
        folders, name = relative.rsplit("/", 1) if "/" in relative else ("", relative)
        target_relative = f"{folders}/{write_id}-{name}" if folders else f"{write_id}-{name}"
        if folders:
            fs.create_dir(f"{root}/{folders}", recursive=True)
        fs.move(info.path, f"{root}/{target_relative}")
        moved.append(f"{root}/{target_relative}")
        with fs.open_input_file(f"{root}/{target_relative}") as handle:
            rows = pq.read_metadata(handle).num_rows
        adds.append(
            AddAction(
                path=target_relative,  # deltalake URL-encodes it for the log
                size=info.size,
                partition_values=_partition_values(folders),
                modification_time=int(time.time() * 1000),
                data_change=True,
                stats=json.dumps({"numRecords": rows}),
            )
        )
    return adds


def _partition_values(folders: str) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for part in filter(None, folders.split("/")):
        column, _, value = part.partition("=")
        values[column] = None if value == HIVE_NULL else unquote(value)
    return values


def _delete_quietly(fs, path: str, folder: bool = False, only_if_empty: bool = False) -> None:
    import pyarrow.fs as pafs

    try:
        if folder:
            if only_if_empty and fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
                return
            fs.delete_dir(path)
        else:
            fs.delete_file(path)
    except (OSError, FileNotFoundError):
        pass


def _with_comments(schema: pa.Schema, comments: dict[str, str]) -> pa.Schema:
    fields = [
        f.with_metadata({**(f.metadata or {}), b"comment": comments[f.name].encode()})
        if f.name in comments
        else f
        for f in schema
    ]
    return pa.schema(fields)
