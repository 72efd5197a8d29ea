"""Executor side of the delta-rs engine: each Spark task writes its rows as Parquet data files of a Delta table.

The files are invisible until the driver commits them (``jobs.delta_tables``); a task reports what it wrote as
rows of ``WRITTEN_FILE_SCHEMA``. File names carry the write's id, so the driver can remove the files of a write
that failed, whichever tasks wrote them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

WRITTEN_FILE_SCHEMA = (
    "path string, size long, partition_values string, num_records long, modification_time long"
)

# Characters Hive (and so Spark and delta-rs) escape in partition directory names.
_PATH_UNSAFE = set("\"#%'*/:=?\\\x7f{[]^") | {chr(c) for c in range(0x20)}


def escape_partition_value(value: str) -> str:
    return "".join(quote(ch, safe="") if ch in _PATH_UNSAFE else ch for ch in value)


def partition_value_string(value: object) -> str | None:
    """A partition value as the Delta protocol serialises it (None stays None)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def partition_dir(partition_by: list[str], values: dict[str, str | None]) -> str:
    parts = []
    for col in partition_by:
        value = values[col]
        parts.append(
            f"{col}={'__HIVE_DEFAULT_PARTITION__' if value is None else escape_partition_value(value)}"
        )
    return "/".join(parts)


def open_table_filesystem(table_uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and root path of a table URI (local path, file://, s3://, gs://, abfss://, hdfs://)."""
    if "://" not in table_uri:
        return pafs.LocalFileSystem(), table_uri
    return pafs.FileSystem.from_uri(table_uri)


def to_delta_arrow_schema(schema: pa.Schema) -> pa.Schema:
    """What the files and the Delta log hold: UTC timestamps, every top-level column nullable."""
    fields = []
    for field in schema:
        type_ = field.type
        if pa.types.is_timestamp(type_) and type_.tz is not None:
            type_ = pa.timestamp("us", tz="UTC")
        fields.append(pa.field(field.name, type_, nullable=True, metadata=field.metadata))
    return pa.schema(fields, metadata=schema.metadata)


def make_file_writer(
    table_uri: str, write_id: str, partition_by: list[str], target_file_rows: int
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The ``mapInArrow`` function of one write: rows in, one row per written file out."""

    def write_task_files(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        task = f"{ctx.partitionId():05d}-{write_id}-a{ctx.attemptNumber()}" if ctx else f"00000-{write_id}-a0"
        fs, root = open_table_filesystem(table_uri)
        open_files: dict[tuple, _OpenFile] = {}
        written: list[dict] = []
        sequence = 0

        def roll(key: tuple, schema: pa.Schema) -> _OpenFile:
            nonlocal sequence
            values = dict(zip(partition_by, key, strict=True))
            folder = partition_dir(partition_by, values)
            name = f"part-{task}-{sequence:04d}.snappy.parquet"
            sequence += 1
            rel = f"{folder}/{name}" if folder else name
            fs.create_dir(f"{root}/{folder}" if folder else root, recursive=True)
            return _OpenFile(fs, root, rel, values, schema)

        for batch in batches:
            if batch.num_rows == 0:
                continue
            table = pa.Table.from_batches([batch])
            table = table.cast(to_delta_arrow_schema(table.schema))
            for key, part in _split_by_partition(table, partition_by):
                current = open_files.get(key)
                if current is None:
                    current = open_files[key] = roll(key, part.schema)
                current.write(part)
                if current.num_records >= target_file_rows:
                    written.append(current.close())
                    del open_files[key]
        written.extend(f.close() for f in open_files.values())
        if written:
            yield pa.RecordBatch.from_pylist(written, schema=_RESULT_ARROW_SCHEMA)

    return write_task_files


_RESULT_ARROW_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("size", pa.int64()),
        ("partition_values", pa.string()),
        ("num_records", pa.int64()),
        ("modification_time", pa.int64()),
    ]
)


class _OpenFile:
    def __init__(
        self, fs: pafs.FileSystem, root: str, rel: str, values: dict[str, str | None], schema: pa.Schema
    ):
        self.fs, self.full = fs, f"{root}/{rel}"
        self.rel, self.values, self.num_records = rel, values, 0
        self.writer = pq.ParquetWriter(self.full, schema, filesystem=fs, compression="snappy")

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table)
        self.num_records += table.num_rows

    def close(self) -> dict:
        self.writer.close()
        info = self.fs.get_file_info(self.full)
        return {
            "path": self.rel,
            "size": info.size,
            "partition_values": json.dumps(self.values),
            "num_records": self.num_records,
            "modification_time": int(time.time() * 1000),
        }


def _split_by_partition(table: pa.Table, partition_by: list[str]) -> Iterator[tuple[tuple, pa.Table]]:
    """(partition key, rows without the partition columns) for each partition present in ``table``."""
    if not partition_by:
        yield (), table
        return
    keys = table.select(partition_by).group_by(partition_by).aggregate([]).to_pylist()
    data = table.drop_columns(partition_by)
    for key_row in keys:
        mask = None
        for col in partition_by:
            value = key_row[col]
            cond = pc.is_null(table[col]) if value is None else pc.equal(table[col], value)
            mask = cond if mask is None else pc.and_(mask, cond)
        key = tuple(partition_value_string(key_row[c]) for c in partition_by)
        yield key, data.filter(mask)
