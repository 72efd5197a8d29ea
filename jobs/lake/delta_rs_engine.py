"""The delta-rs engine: Delta tables on plain Spark, for sessions without the Delta connector.

Reads list the snapshot's data files with ``deltalake`` and read them as Parquet (partition values from the log).
Writes let every task write its own Parquet files into a staging folder inside the table, then this process moves
them into place and commits all of them in ONE Delta transaction with ``deltalake``. Until that commit nothing is
visible; if any task or the commit fails, the write's files are removed and the table stays at its previous
version. A process killed before its commit leaves a staging folder that the next write (or jobs/maintain.py)
removes once it is ``delta.staging_max_age_hours`` old.

Jobs never import this module: they call ``jobs.lake.delta_tables``, which chooses the engine.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

from jobs.platform.errors import CommitConflictError, ElmoLakeError, TableNotFoundError, UnsupportedTableError
from jobs.platform.paths import is_uri, local_path

# Reader features the delta-rs read path honours; a table needing any other one is refused.
SUPPORTED_READER_FEATURES = {"timestampNtz", "v2Checkpoint", "vacuumProtocolCheck"}
STAGING_DIR = "_elmo_lake_staging"  # '_' folders are invisible to Delta and Spark readers
MANIFEST_SUFFIX = (
    ".moved"  # _elmo_lake_staging/<write id>.moved: the table files a write moves before its commit
)
DEFAULT_STAGING_MAX_AGE_HOURS = 6.0  # a staging folder untouched this long belongs to a write that died
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
# Characters Hive (and so Spark and delta-rs) escape in partition folder names.
_PATH_UNSAFE = set("\"#%'*/:=?\\\x7f{[]^") | {chr(c) for c in range(0x20)}


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


def table_uri(path: str) -> str:
    """A path as delta-rs wants it: URIs for object stores, else what local file I/O opens (/dbfs for DBFS)."""
    path = str(path)
    if is_uri(path) and not path.startswith(("dbfs:", "file:")):
        return path.rstrip("/")
    return local_path(path)


def exists(path: str) -> bool:
    from deltalake import DeltaTable

    return DeltaTable.is_deltatable(table_uri(path))


def table_version(path: str) -> int | None:
    """The current version of a Delta table (read from its log, either engine), or None if there is none."""
    from deltalake import DeltaTable

    uri = table_uri(path)
    return DeltaTable(uri).version() if DeltaTable.is_deltatable(uri) else None


def add_columns(path: str, columns: list[tuple[str, str, str | None]]) -> None:
    """Add nullable columns (name, primitive Spark SQL type, comment) to the table, in one commit."""
    from deltalake import DeltaTable, Field
    from deltalake.schema import PrimitiveType

    fields = [
        Field(name, PrimitiveType(kind), nullable=True, metadata={"comment": comment} if comment else None)
        for name, kind, comment in columns
    ]
    DeltaTable(table_uri(path)).alter.add_columns(fields)


def partition_columns(path: str) -> list[str] | None:
    """The table's partition columns, or None if there is no table."""
    from deltalake import DeltaTable

    uri = table_uri(path)
    if not DeltaTable.is_deltatable(uri):
        return None
    return list(DeltaTable(uri).metadata().partition_columns)


def _open_table(path: str, version: int | None = None):
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


def read(spark: SparkSession, path: str, version: int | None = None) -> DataFrame:
    """The snapshot (current, or ``version``) as a DataFrame; refuses tables this path would read wrongly."""
    dt = _open_table(path, version)
    _check_readable(dt, path)
    arrow_schema = pa.schema(dt.schema().to_arrow())
    spark_schema = from_arrow_schema(arrow_schema, prefer_timestamp_ntz=False)
    partition_by = list(dt.metadata().partition_columns)
    adds = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
    files = [
        # the log holds URL-encoded relative paths; the files have the decoded names
        (unquote(a["path"]), {c: a.get(f"partition.{c}") for c in partition_by})
        for a in adds
    ]
    return read_files(spark, table_uri(path), spark_schema, partition_by, files)


def read_files(
    spark: SparkSession,
    root: str,
    spark_schema: T.StructType,
    partition_by: list[str],
    files: list[tuple[str, dict[str, object]]],
) -> DataFrame:
    """Rows of some of a table's data files as one DataFrame with the table's schema: ``files`` are (path
    relative to ``root``, decoded; partition values), as the log lists them. Files without deletion vectors in a
    table without column mapping (the callers check)."""
    columns = [f.name for f in spark_schema.fields]
    if not files:
        return spark.createDataFrame([], spark_schema)
    paths = [f"{root}/{relative}" for relative, _ in files]
    if not partition_by:
        return spark.read.schema(spark_schema).parquet(*paths).select(*columns)
    values = [{c: (None if v.get(c) is None else str(v.get(c))) for c in partition_by} for _, v in files]
    if all(
        relative.startswith(partition_dir(partition_by, v) + "/")
        for (relative, _), v in zip(files, values, strict=True)
    ):
        # Hive-style folders that match the log: Spark parses the partition values from the paths.
        return spark.read.schema(spark_schema).option("basePath", root).parquet(*paths).select(*columns)
    # Files placed elsewhere (other writers may): take the values from the log, one read per partition.
    data_schema = T.StructType([f for f in spark_schema.fields if f.name not in partition_by])
    groups: dict[tuple, list[str]] = {}
    for file, row in zip(paths, values, strict=True):
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


def write(
    df: DataFrame,
    path: str,
    mode: str,
    partition_by: list[str],
    exists: bool,
    description: str | None,
    target_file_rows: int,
    comments: dict[str, str],
    expected_version: int | None | Literal["any"],
    staging_max_age_hours: float,
    user_metadata: str | None = None,
) -> tuple[int, int, int]:
    """Commit ``df`` as one transaction (see the module's docstring): (version, files, rows) written."""
    from deltalake import DeltaTable, Schema
    from deltalake.exceptions import CommitFailedError, DeltaError
    from deltalake.transaction import CommitProperties, create_table_with_add_actions

    uri = table_uri(path)
    # Read version fixed before any data is written: a commit by someone else since then is a conflict for
    # non-blind writes; a read-dependent write allows none at all (no retry on top of someone else's commit).
    read_dependent = expected_version != "any"
    read_version = expected_version if read_dependent else (DeltaTable(uri).version() if exists else None)
    arrow_schema = to_delta_arrow_schema(to_arrow_schema(df.schema, timezone="UTC"))
    write_id = uuid.uuid4().hex[:16]
    fs, root = open_table_filesystem(uri)
    if exists:
        remove_dead_writes(path, staging_max_age_hours)
    staging = f"{root}/{STAGING_DIR}/{write_id}"
    moved: list[str] = []
    try:
        with _tasks_stopped_on_failure(df.sparkSession, f"elmo-lake-write-{write_id}"):
            _write_parquet(df, _spark_path(uri, f"{STAGING_DIR}/{write_id}"), partition_by, target_file_rows)
        _check_staging_visible(fs, staging, path)
        adds = _move_into_table(fs, root, staging, write_id, moved)
        pause_before_commit(path, f"write {write_id}: files written")
        props = CommitProperties(
            custom_metadata={
                "engineInfo.elmo-lake": "delta-rs",
                "writeId": write_id,
                # the connector's commitInfo field: DESCRIBE HISTORY shows it on both engines
                **({"userMetadata": user_metadata} if user_metadata else {}),
            },
            max_commit_retries=0 if read_dependent else None,
        )
        if exists:  # the table's column comments stay unless this write gives new ones (as on the connector)
            comments = {**_table_comments(DeltaTable(uri, version=read_version)), **comments}
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
        _delete_quietly(fs, f"{staging}{MANIFEST_SUFFIX}")
        _delete_quietly(fs, f"{root}/{STAGING_DIR}", folder=True, only_if_empty=True)
    version = DeltaTable(uri).version()
    return version, len(adds), sum(json.loads(a.stats)["numRecords"] for a in adds)


@contextmanager
def _tasks_stopped_on_failure(
    spark: SparkSession, tag: str, timeout_s: float = 60.0, unwatched_s: float = 3.75
):
    """Run a Spark write; if it fails, re-raise only once its tasks have stopped.

    When one task fails, Spark fails the job at once and cancels its other tasks without waiting for them: a task
    still running can create its Parquet file in the staging folder after this process has removed it. On a classic
    session the write's jobs carry ``tag``, and the wait (at most ``timeout_s``) lasts until the status tracker has
    seen every one of them end and none of their tasks run; it follows the scheduler's events a little behind, so
    a job not yet seen is waited for up to a second. Where the tasks cannot be watched (over Spark Connect the
    server's driver runs them), the wait is ``unwatched_s``; what a task writes later still is a dead write that
    the next write or jobs/maintain.py removes.
    """
    context = _spark_context(spark)
    if context is not None:
        context.addJobTag(tag)
    try:
        yield
    except BaseException:
        if context is None:
            time.sleep(unwatched_s)
        else:
            _wait_for_tagged_tasks(context, tag, timeout_s)
        raise
    finally:
        if context is not None:
            context.removeJobTag(tag)


def _spark_context(spark: SparkSession):
    """The session's SparkContext, or None where there is none to use (Spark Connect; a cluster that denies it)."""
    from jobs.platform.session import is_connect

    if is_connect(spark):
        return None
    try:
        return spark.sparkContext
    except Exception:  # e.g. a shared cluster whose access mode denies it
        return None


def _wait_for_tagged_tasks(context, tag: str, timeout_s: float) -> None:
    try:
        jobs_by_tag = context._jsc.sc().statusTracker()
        tracker = context.statusTracker()
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            job_ids = list(jobs_by_tag.getJobIdsForTag(tag))
            if not job_ids and time.monotonic() - started > 1.0:
                return  # the write failed before any job ran (a bad path, a bad plan)
            busy = not job_ids
            for job_id in job_ids:
                job = tracker.getJobInfo(job_id)
                if job is None:
                    continue
                busy = busy or job.status in ("RUNNING", "UNKNOWN")
                for stage_id in job.stageIds:
                    stage = tracker.getStageInfo(stage_id)
                    busy = busy or (stage is not None and stage.numActiveTasks > 0)
            if not busy:
                return
            time.sleep(0.05)
    except Exception:  # the wait only makes the clean-up final; never mask the write's own error
        return


def _check_staging_visible(fs, staging: str, path: str) -> None:
    """Spark (the executors, or a Connect server) wrote the files; this process commits them, so it must see them."""
    import pyarrow.fs as pafs

    if fs.get_file_info(staging).type == pafs.FileType.NotFound:
        raise ElmoLakeError(
            f"Spark wrote this write's files to {staging}, but this process cannot see them there. The delta-rs "
            f"engine commits from the client, so the client and Spark (a Spark Connect server, a cluster) must "
            f"share the storage of {path}: use a shared path (an object store URI, a mounted volume), or the "
            "Delta connector (--set delta.engine=spark)"
        )


def _write_parquet(df: DataFrame, target: str, partition_by: list[str], target_file_rows: int) -> None:
    """Spark's own Parquet writer (no Python on the write path), with the timestamp encoding Delta reads."""
    spark = df.sparkSession
    key = "spark.sql.parquet.outputTimestampType"
    previous = spark.conf.get(key, None)
    spark.conf.set(key, "TIMESTAMP_MICROS")
    try:
        # "error", not "errorifexists": Spark Connect knows only the short name
        writer = df.write.mode("error").option("compression", "snappy")
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
    plan = []
    for info in sorted(infos, key=lambda i: i.path):
        if info.type != pafs.FileType.File or not info.base_name.endswith(".parquet"):
            continue
        relative = info.path[len(staging) + 1 :]
        folders, name = relative.rsplit("/", 1) if "/" in relative else ("", relative)
        plan.append((info, folders, f"{folders}/{write_id}-{name}" if folders else f"{write_id}-{name}"))
    # Written before any file moves: if this process dies before its commit, the next write (or
    # jobs/maintain.py) knows which files in the table are this write's uncommitted ones.
    with fs.open_output_stream(f"{staging}{MANIFEST_SUFFIX}") as manifest:
        manifest.write("\n".join(target for _, _, target in plan).encode())
    for info, folders, target_relative in plan:
        if folders:
            fs.create_dir(f"{root}/{folders}", recursive=True)
        fs.move(info.path, f"{root}/{target_relative}")
        moved.append(f"{root}/{target_relative}")
        with fs.open_input_file(f"{root}/{target_relative}") as handle:
            stats = file_statistics(pq.read_metadata(handle))
        adds.append(
            AddAction(
                path=target_relative,  # deltalake URL-encodes it for the log
                size=info.size,
                partition_values=_partition_values(folders),
                modification_time=int(time.time() * 1000),
                data_change=True,
                stats=json.dumps(stats),
            )
        )
    return adds


STATS_STRING_PREFIX = 32  # as the Delta connector (dataSkippingStringPrefixLength): strings are cut to this


def file_statistics(metadata) -> dict:
    """A data file's Delta statistics from its Parquet footer, as the Delta connector writes them: numRecords, and
    minValues / maxValues / nullCount of every top-level, non-nested column (no second read of the data).

    Strings are cut to 32 characters (a cut maximum gets U+10FFFF appended, so it stays an upper bound);
    timestamps are ISO-8601 UTC with milliseconds; columns whose statistics the footer lacks are left out.
    """
    import datetime as dt

    schema = metadata.schema.to_arrow_schema()
    mins: dict = {}
    maxs: dict = {}
    nulls: dict = {}
    for index, field in enumerate(schema):
        if pa.types.is_nested(field.type):
            continue
        column_stats = [
            metadata.row_group(g).column(index).statistics for g in range(metadata.num_row_groups)
        ]
        if not column_stats or any(c is None for c in column_stats):
            continue
        if all(c.has_null_count for c in column_stats):
            nulls[field.name] = int(sum(c.null_count for c in column_stats))
        with_values = [c for c in column_stats if c.has_min_max]
        if not with_values or not _has_min_max_type(field.type):
            continue
        low, high = min(c.min for c in with_values), max(c.max for c in with_values)
        if isinstance(low, float) and (low != low or high != high):  # NaN: no usable bound
            continue
        if isinstance(low, str):
            low = low[:STATS_STRING_PREFIX]
            if len(high) > STATS_STRING_PREFIX:
                high = high[:STATS_STRING_PREFIX] + "\U0010ffff"
        if isinstance(low, dt.datetime):
            low, high = _delta_timestamp(low), _delta_timestamp(high)
        elif isinstance(low, dt.date):
            low, high = low.isoformat(), high.isoformat()
        mins[field.name], maxs[field.name] = low, high
    return {"numRecords": metadata.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}


def _has_min_max_type(type_: pa.DataType) -> bool:
    return (
        pa.types.is_integer(type_)
        or pa.types.is_floating(type_)
        or pa.types.is_string(type_)
        or pa.types.is_large_string(type_)
        or pa.types.is_date(type_)
        or pa.types.is_timestamp(type_)
    )


def _delta_timestamp(value) -> str:
    import datetime as dt

    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    value = value.astimezone(dt.timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def pause_before_commit(path: str, moment: str) -> None:
    """ELMO_LAKE_PAUSE_BEFORE_COMMIT=SECONDS: a debug setting for fault-injection tests and drills. delta-rs
    engine: the data files are in place, the commit is not made yet (the moment a kill must leave the table
    unchanged); connector engine: the snapshot is read, the write (a MERGE) has not started. The pause ends
    early once the file named by ELMO_LAKE_RESUME_FILE exists (a drill's "go on")."""
    seconds = float(os.environ.get("ELMO_LAKE_PAUSE_BEFORE_COMMIT", "0") or 0)
    if seconds > 0:
        import sys
        import time

        print(
            f"elmo-lake: {path}: {moment}, pausing {seconds:g} s before the commit "
            "(ELMO_LAKE_PAUSE_BEFORE_COMMIT)",
            file=sys.stderr,
            flush=True,
        )
        resume = os.environ.get("ELMO_LAKE_RESUME_FILE")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (resume and os.path.exists(resume)):
            time.sleep(0.2)


@dataclass(frozen=True)
class DeadWrite:
    """A write that never committed: its staging folder, and the data files it had moved into the table."""

    write_id: str
    idle_hours: float
    files: tuple[str, ...]


def dead_writes(path: str, max_age_hours: float = DEFAULT_STAGING_MAX_AGE_HOURS) -> list[DeadWrite]:
    """Writes under ``_elmo_lake_staging/`` untouched for ``max_age_hours`` (a live writer keeps writing there),
    with the files each moved into the table but the log does not reference."""
    import time

    import pyarrow.fs as pafs
    from deltalake import DeltaTable

    uri = table_uri(path)
    fs, root = open_table_filesystem(uri)
    staging_root = f"{root}/{STAGING_DIR}"
    entries = fs.get_file_info(pafs.FileSelector(staging_root, recursive=True, allow_not_found=True))
    newest: dict[str, float] = {}
    for info in entries:
        write_id = info.path[len(staging_root) + 1 :].split("/", 1)[0].removesuffix(MANIFEST_SUFFIX)
        mtime = info.mtime.timestamp() if info.mtime else 0.0
        newest[write_id] = max(newest.get(write_id, 0.0), mtime)
    now = time.time()
    dead = {w: (now - t) / 3600 for w, t in newest.items() if now - t >= max_age_hours * 3600}
    if not dead:
        return []
    referenced = (
        {
            unquote(a)
            for a in pa.table(DeltaTable(uri).get_add_actions(flatten=True)).column("path").to_pylist()
        }
        if DeltaTable.is_deltatable(uri)
        else set()
    )
    found = []
    for write_id, idle in sorted(dead.items()):
        manifest = f"{staging_root}/{write_id}{MANIFEST_SUFFIX}"
        listed: list[str] = []
        if fs.get_file_info(manifest).type == pafs.FileType.File:
            with fs.open_input_stream(manifest) as handle:
                listed = [line for line in handle.read().decode().splitlines() if line]
        orphans = tuple(
            f
            for f in listed
            if f not in referenced and fs.get_file_info(f"{root}/{f}").type == pafs.FileType.File
        )
        found.append(DeadWrite(write_id, idle, orphans))
    return found


def remove_dead_writes(path: str, max_age_hours: float = DEFAULT_STAGING_MAX_AGE_HOURS) -> list[DeadWrite]:
    """Delete what ``dead_writes`` finds: the uncommitted data files, then the staging folders."""
    fs, root = open_table_filesystem(table_uri(path))
    found = dead_writes(path, max_age_hours)
    for dead in found:
        for file in dead.files:
            _delete_quietly(fs, f"{root}/{file}")
        _delete_quietly(fs, f"{root}/{STAGING_DIR}/{dead.write_id}", folder=True)
        _delete_quietly(fs, f"{root}/{STAGING_DIR}/{dead.write_id}{MANIFEST_SUFFIX}")
    if found:
        _delete_quietly(fs, f"{root}/{STAGING_DIR}", folder=True, only_if_empty=True)
    return found


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


def _table_comments(dt) -> dict[str, str]:
    fields = json.loads(dt.schema().to_json())["fields"]
    return {f["name"]: f["metadata"]["comment"] for f in fields if "comment" in (f.get("metadata") or {})}


def _with_comments(schema: pa.Schema, comments: dict[str, str]) -> pa.Schema:
    fields = [
        f.with_metadata({**(f.metadata or {}), b"comment": comments[f.name].encode()})
        if f.name in comments
        else f
        for f in schema
    ]
    return pa.schema(fields)
