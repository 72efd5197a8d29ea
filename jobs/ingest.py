"""Ingest job: CSV, Parquet or JSON text files -> a Delta table of documents, and a table of rejected rows.

    ./spark-submit.sh jobs/ingest.py --input PATH --table PATH [--rejects PATH] [--format csv|parquet|json]

Documents are ``id`` (string), ``text``, ``label`` (0/1 or null), ``source_file``, ``ingested_at``. A row with a
missing or blank id or text, a label other than 0/1, or an id seen earlier in the input is not a document: it
goes to the rejects table with the reason and where it came from. Ids already in the table are skipped, so
re-running on the same input adds nothing.

A folder (or glob) is read incrementally: each run lists its files and reads only those not in the table's
source-files table (``TABLE_source_files``: path, size, modification time, records read), so a run over a folder
that gained a file reads that file; a file changed in place (another size or modification time) is read again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.lake.delta_tables import (
    append_on_snapshot,
    commit_metadata,
    engine_name,
    read_delta,
    retry_once_on_conflict,
    rows_missing_from,
    snapshot_version,
    table_exists,
)
from jobs.lake.quarantine import rejects_table_for
from jobs.platform.cli import job_parser, log, run_job
from jobs.platform.config import Config
from jobs.platform.errors import ConfigError, InputError, is_missing_path
from jobs.platform.paths import default_sample, spark_path
from jobs.platform.session import get_spark, release, reuse
from jobs.platform.table_names import shown

DOCUMENTS_DESCRIPTION = (
    "elmo-lake documents: id (string, unique), text (as ingested), label (0/1, null when unlabelled), "
    "source_file, ingested_at (UTC)"
)
REJECTS_DESCRIPTION = "elmo-lake ingest rejects: the input rows that are not documents, with the reason"
REJECT_COLUMNS = ["source_file", "record", "id", "text", "label", "reason", "ingested_at"]
SOURCE_FILES_DESCRIPTION = (
    "elmo-lake ingest: the files read from a folder input (path, size, modification time, records read); a later "
    "ingest of that folder reads only the files not listed here"
)
SOURCE_FILES_COMMENTS = {
    "path": "the file, as Spark lists it (documents.source_file)",
    "size": "its size in bytes when it was read",
    "modified_ms": "its modification time when it was read (milliseconds since 1970-01-01 UTC)",
    "records": "records read from it (documents, rows already in the table and rejects)",
    "input": "the ingest's --input (a folder or glob)",
    "ingested_at": "when it was read (UTC)",
}
SOURCE_FILE_KEYS = ["path", "size", "modified_ms"]
SOURCE_FILES_SCHEMA = (
    "path string, size long, modified_ms long, records long, input string, ingested_at timestamp"
)


@dataclass
class IngestSummary:
    table: str
    rejects_table: str
    read: int = 0
    added: int = 0
    already_present: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    version: int | None = None
    files: tuple[int, int] | None = None  # a folder input: (files read this run, files listed)

    def describe(self) -> str:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.rejected.items())) or "none"
        return (
            f"read {self.read} records: added {self.added}, skipped {self.already_present} already in the table, "
            f"rejected {sum(self.rejected.values())} ({reasons})"
        )


@dataclass(frozen=True, order=True)
class SourceFile:
    path: str  # as Spark lists it, the same string as the documents' source_file
    size: int
    modified_ms: int


def source_files_table_for(table: str) -> str:
    """Where ingest lists the files of a folder input it has read: the documents table's name or folder +
    ``_source_files``."""
    return table.rstrip("/") + "_source_files"


def list_source_files(spark: SparkSession, input_path: str) -> list[SourceFile] | None:
    """The files of a folder or glob input, as Spark's readers see them (hidden files aside); None when the input
    is one file. One listing job, no file contents read."""
    if Path(input_path).is_file():
        return None
    source = spark_path(input_path)
    try:
        rows = (
            spark.read.format("binaryFile")
            .load(source)
            .select("path", "length", F.unix_millis("modificationTime").alias("modified_ms"))
            .collect()
        )
    except Exception as exc:
        if is_missing_path(exc):
            raise InputError(f"input {input_path} does not exist") from None
        raise InputError(f"cannot list the files of {input_path}: {str(exc).splitlines()[0]}") from None
    if len(rows) == 1 and _same_file(rows[0]["path"], source):
        return None
    return sorted(SourceFile(r["path"], int(r["length"]), int(r["modified_ms"])) for r in rows)


def _same_file(listed: str, source: str) -> bool:
    from urllib.parse import unquote, urlparse

    return unquote(urlparse(listed).path).rstrip("/") == unquote(urlparse(source).path).rstrip("/")


def unread_files(
    spark: SparkSession,
    cfg: Config,
    listed: list[SourceFile],
    files_table: str,
    table: str,
    files_known: bool,
) -> list[SourceFile]:
    """The listed files that the source-files table does not hold with the same size and modification time
    (all of them without that table (``files_known`` false) or without the documents ``table``, or with
    ``delta.incremental`` off)."""
    if not (cfg.delta.incremental and files_known and table_exists(spark, table, cfg.delta.engine)):
        return listed
    read = {
        SourceFile(r["path"], r["size"], r["modified_ms"])
        for r in read_delta(spark, files_table, cfg.delta.engine).select(*SOURCE_FILE_KEYS).collect()
    }
    return [f for f in listed if f not in read]


def input_format(path: str, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = Path(path.rstrip("/")).suffix.lower()
    formats = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".json": "json", ".jsonl": "json"}
    if suffix not in formats:
        raise InputError(
            f"cannot tell the format of {path} from its extension; give --format csv|parquet|json"
        )
    return formats[suffix]


def read_input(
    spark: SparkSession,
    path: str,
    fmt: str,
    cfg: Config,
    files: list[str] | None = None,
    allow_empty: bool = False,
) -> DataFrame | None:
    """The input's rows with every column as it came, plus ``source_file`` and ``_order`` (input order).

    ``files``: read only these files of the folder ``path`` (as ``list_source_files`` gives them).
    ``allow_empty``: no rows is None, not an InputError (new files of a folder that hold no records)."""
    fmt = input_format(path, fmt)
    encoding = spark_charset(cfg.ingest.encoding)
    # what Spark reads (dbfs:/ for /dbfs/; absolute, so a Connect server finds it too)
    source: str | list[str] = spark_path(path)
    base = spark.read
    if files is not None:
        if not any(c in path for c in "*?[{"):  # partition folders (k=v) found below the folder, as before
            base = base.option("basePath", source)
        source = files
    try:
        if fmt == "csv":
            reader = (
                base.option("header", True)
                .option("multiLine", True)  # quoted tweets that span lines
                .option("quote", '"')
                .option("escape", '"')
                .option("sep", cfg.ingest.csv_delimiter)
                .option("encoding", encoding)
                .option("mode", "PERMISSIVE")
                .option("inferSchema", False)
            )
            raw = reader.csv(source)
        elif fmt == "json":
            raw = (
                base.option("mode", "PERMISSIVE")
                .option("columnNameOfCorruptRecord", CORRUPT)  # a line that is not JSON: kept whole, rejected
                .option("encoding", encoding)
                .json(source)
            )
        else:
            raw = base.parquet(*([source] if isinstance(source, str) else source))
        raw.schema  # noqa: B018  (Spark Connect reads lazily: a missing input fails here, not later)
    except Exception as exc:
        if is_missing_path(exc):
            raise InputError(f"input {path} does not exist") from None
        raise InputError(f"cannot read {path} as {fmt}: {str(exc).splitlines()[0]}") from None
    if raw.limit(1).count() == 0:
        if allow_empty:
            return None
        raise InputError(f"no rows in {path}")
    if fmt == "json" and [c for c in raw.columns if c != CORRUPT] == []:
        first = spark.read.text(source).first()[0]  # (Spark refuses a query of the corrupt column alone)
        raise InputError(
            f"no line of {path} is a JSON object (JSON Lines: one object per line); first: {first[:80]!r}"
        )
    # Spark decodes UTF-8 leniently: bytes that are not UTF-8 become U+FFFD, silently. Find the files where that
    # happened, and the CSV files whose quotes do not pair up (a quote left open swallows every record after it
    # into one field): one JVM pass over the raw bytes, no Python.
    undecodable: list[str] = []
    open_quote: list[str] = []
    if fmt in ("csv", "json") and encoding in ("utf-8", "iso-8859-1", "us-ascii"):
        # each file decoded once ('"' is one byte in these encodings, never inside another character)
        text = F.col("text")
        quotes = F.length(text) - F.length(F.replace(text, F.lit('"'), F.lit("")))
        files = (
            spark.read.format("binaryFile")
            .load(source)
            .select("path", F.col("content").cast("string").alias("text"))
            .select(
                "path",
                F.expr("is_valid_utf8(text)").alias("valid"),
                (quotes % 2 == 1 if fmt == "csv" else F.lit(False)).alias("odd_quotes"),
            )
            .where(~F.col("valid") | F.col("odd_quotes"))
            .collect()
        )
        undecodable = [r["path"] for r in files if not r["valid"] and encoding == "utf-8"]
        open_quote = [r["path"] for r in files if r["odd_quotes"]]
    return (
        raw.withColumn("source_file", F.col("_metadata.file_path"))
        .withColumn("_order", F.monotonically_increasing_id())
        .withColumn("_undecodable", F.col("source_file").isin(undecodable) if undecodable else F.lit(False))
        .withColumn("_open_quote", F.col("source_file").isin(open_quote) if open_quote else F.lit(False))
    )


# Python's names for the encodings Spark's CSV and JSON readers know, and Spark's name for each.
SPARK_CHARSETS = {
    "utf-8": "utf-8",
    "iso8859-1": "iso-8859-1",
    "ascii": "us-ascii",
    "utf-16": "utf-16",
    "utf-16-be": "utf-16be",
    "utf-16-le": "utf-16le",
    "utf-32": "utf-32",
}


def spark_charset(name: str) -> str:
    """ingest.encoding as Spark's readers name it (latin-1 -> iso-8859-1); an unknown one is a ConfigError."""
    import codecs

    try:
        python_name = codecs.lookup(name).name
    except LookupError:
        python_name = name
    if python_name not in SPARK_CHARSETS:
        raise ConfigError(
            [
                f"ingest.encoding: {name!r} is not an encoding Spark's CSV/JSON readers know (allowed: utf-8, "
                "latin-1 (iso-8859-1), us-ascii, utf-16, utf-16be, utf-16le, utf-32)"
            ]
        )
    return SPARK_CHARSETS[python_name]


CORRUPT = "_corrupt_record"  # a JSON line that did not parse, whole (Spark's PERMISSIVE mode)
# added by read_input, never the input's own
INTERNAL_COLUMNS = ("source_file", "_order", "_undecodable", "_open_quote", CORRUPT)


def pick_text_column(columns: list[str], configured: str) -> str:
    if configured != "auto":
        return configured
    for candidate in ("text", "tweet"):
        if candidate in columns:
            return candidate
    raise InputError(f"input has no 'text' or 'tweet' column (columns: {columns}); set ingest.text_column")


def validate_documents(
    raw: DataFrame,
    id_column: str,
    text_column: str,
    label_column: str | None,
    ingested_at: dt.datetime,
    max_quoted_lines: int = 50,
) -> DataFrame:
    """Every input row with ``reason`` null (a document) or saying why it is rejected. No I/O.

    A CSV file whose quotes do not pair up has its last record rejected: the open quote took the rest of the
    file into one field ("unterminated quote opened at record N, K lines absorbed"); so has any record with a
    field over ``max_quoted_lines`` lines. A JSON line that did not parse is rejected as "malformed JSON", its
    raw text kept as the reject's text."""
    data_columns = [c for c in raw.columns if c not in INTERNAL_COLUMNS]
    for name, setting in ((id_column, "ingest.id_column"), (text_column, "ingest.text_column")):
        if name not in data_columns:
            raise InputError(f"input has no column {name!r} (columns: {data_columns}); set {setting}")
    has_label = label_column is not None and label_column in data_columns
    label_raw = F.trim(F.col(label_column).cast("string")) if has_label else F.lit(None).cast("string")
    internal = lambda c: F.col(c) if c in raw.columns else F.lit(False)  # noqa: E731
    corrupt = F.col(CORRUPT) if CORRUPT in raw.columns else F.lit(None).cast("string")
    rows = raw.select(
        F.trim(F.col(id_column).cast("string")).alias("id"),
        F.coalesce(corrupt, F.col(text_column).cast("string")).alias("text"),
        label_raw.alias("label_raw"),
        "source_file",
        "_order",
        internal("_undecodable").alias("_undecodable"),
        internal("_open_quote").alias("_open_quote"),
        corrupt.isNotNull().alias("_malformed"),
    )
    in_file = Window.partitionBy("source_file")
    rows = rows.withColumn("record", F.row_number().over(in_file.orderBy("_order"))).withColumn(
        "_last", F.col("record") == F.count(F.lit(1)).over(in_file)
    )
    # lines a record's fields took in (its trailing line ends aside): more than one line per field is a quote
    fields = F.concat_ws(" ", *(F.regexp_replace(c, "[\r\n]+$", "") for c in ("id", "text", "label_raw")))
    absorbed = F.length(fields) - F.length(F.regexp_replace(fields, "\n", ""))
    unterminated = F.concat(
        F.lit("unterminated quote opened at record "),
        F.col("record").cast("string"),
        F.lit(", "),
        absorbed.cast("string"),
        F.when(absorbed == 1, F.lit(" line absorbed")).otherwise(F.lit(" lines absorbed")),
    )
    blank = lambda c: F.col(c).isNull() | (F.trim(F.col(c)) == "")  # noqa: E731
    replaced = "\ufffd"  # what the reader put where bytes did not decode
    damaged = F.col("_undecodable") & (
        F.coalesce(F.col("id").contains(replaced), F.lit(False))
        | F.coalesce(F.col("text").contains(replaced), F.lit(False))
        | F.coalesce(F.col("label_raw").contains(replaced), F.lit(False))
    )
    row_reason = (
        F.when(F.col("_malformed"), F.lit("malformed JSON"))
        .when(F.col("_open_quote") & F.col("_last") & (absorbed > 0), unterminated)
        .when(
            absorbed > max_quoted_lines,
            F.concat(unterminated, F.lit(f" (a field over ingest.max_quoted_lines = {max_quoted_lines})")),
        )
        .when(damaged, F.lit("not valid utf-8 (set ingest.encoding)"))
        .when(blank("id"), F.lit("missing id"))
        .when(blank("text"), F.lit("missing text"))
        .when(F.lit(has_label) & F.col("label_raw").isNull(), F.lit("missing label"))
        .when(
            F.lit(has_label) & ~F.col("label_raw").isin("0", "1"),
            F.concat(F.lit("label '"), F.col("label_raw"), F.lit("' is not 0 or 1")),
        )
    )
    rows = rows.withColumn("reason", row_reason)
    first_seen = Window.partitionBy("id").orderBy("source_file", "_order")
    occurrence = F.when(F.col("reason").isNull(), F.row_number().over(first_seen))
    rows = rows.withColumn("_occurrence", occurrence).withColumn(
        "reason", F.when(F.col("_occurrence") > 1, F.lit("duplicate id")).otherwise(F.col("reason"))
    )
    return rows.select(
        "id",
        "text",
        "label_raw",
        "reason",
        "source_file",
        F.col("record").cast("long").alias("record"),
        F.lit(ingested_at).cast("timestamp").alias("ingested_at"),
    )


def documents_of(checked: DataFrame) -> DataFrame:
    return checked.where(F.col("reason").isNull()).select(
        "id",
        "text",
        F.col("label_raw").cast(T.IntegerType()).alias("label"),
        "source_file",
        "ingested_at",
    )


def rejects_of(checked: DataFrame) -> DataFrame:
    return checked.where(F.col("reason").isNotNull()).select(
        "source_file", "record", "id", "text", F.col("label_raw").alias("label"), "reason", "ingested_at"
    )


def run(
    spark: SparkSession, cfg: Config, input_path: str, table: str, rejects_table: str, fmt: str = "auto"
) -> IngestSummary:
    summary = IngestSummary(table=table, rejects_table=rejects_table)
    fmt = fmt if fmt else cfg.ingest.format
    files_table = source_files_table_for(table)
    listed = list_source_files(spark, input_path)
    new_files = None
    if listed is not None:
        files_known = table_exists(spark, files_table, cfg.delta.engine)
        if not listed and not files_known:
            raise InputError(f"no files in {input_path}")
        new_files = unread_files(spark, cfg, listed, files_table, table, files_known)
        summary.files = (len(new_files), len(listed))
        # nothing new (also a folder emptied after it was read, as archiving its files elsewhere leaves it)
        if not new_files:
            summary.version = snapshot_version(spark, table, cfg.delta.engine)
            log(
                "ingest",
                f"nothing new in {input_path}: its {len(listed)} files were all read before "
                f"(same size and modification time, listed in {shown(files_table)})",
            )
            return summary
        if len(new_files) < len(listed):
            log(
                "ingest",
                f"{input_path}: reading {len(new_files)} new or changed files of {len(listed)} "
                f"(the others were read before, listed in {shown(files_table)})",
            )
    only = [f.path for f in new_files] if new_files is not None and new_files != listed else None
    raw = read_input(spark, input_path, fmt, cfg, files=only, allow_empty=listed is not None)
    if raw is None:
        log("ingest", f"the {len(new_files)} new files of {input_path} hold no records")
        _record_files(spark, cfg, files_table, new_files, {}, input_path)
        summary.version = snapshot_version(spark, table, cfg.delta.engine)
        return summary
    text_column = pick_text_column(
        [c for c in raw.columns if c not in INTERNAL_COLUMNS], cfg.ingest.text_column
    )
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    checked = reuse(
        validate_documents(
            raw, cfg.ingest.id_column, text_column, cfg.ingest.label_column, now, cfg.ingest.max_quoted_lines
        )
    )
    try:
        counts = checked.groupBy("source_file", "reason").count().collect()
        summary.read = sum(r["count"] for r in counts)
        rejected = Counter()
        for r in counts:
            if r["reason"] is not None:
                rejected[r["reason"]] += r["count"]
        summary.rejected = dict(rejected)
        valid = sum(r["count"] for r in counts if r["reason"] is None)
        retry_once_on_conflict(
            "ingest",
            table,
            lambda: _append_new_documents(spark, cfg, checked, table, summary, valid, input_path),
        )
        retry_once_on_conflict(
            "ingest", rejects_table, lambda: _append_new_rejects(spark, cfg, checked, rejects_table)
        )
    finally:
        release(checked)
    if new_files is not None:
        records = Counter()
        for r in counts:
            records[r["source_file"]] += r["count"]
        _record_files(spark, cfg, files_table, new_files, records, input_path)
    return summary


def _record_files(
    spark: SparkSession,
    cfg: Config,
    files_table: str,
    files: list[SourceFile],
    records: dict[str, int],
    input_path: str,
) -> None:
    """List the files this run read in the source-files table, after their rows are committed: a run killed
    before this reads them again, and adds nothing (documents and rejects are appended on their keys)."""
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    rows = [(f.path, f.size, f.modified_ms, records.get(f.path, 0), input_path, now) for f in files]

    def append() -> None:
        new, version = rows_missing_from(
            spark,
            spark.createDataFrame(rows, SOURCE_FILES_SCHEMA),
            files_table,
            cfg.delta.engine,
            SOURCE_FILE_KEYS,
        )
        if version is not None and new.limit(1).count() == 0:
            return  # another run listed them first
        append_on_snapshot(
            new,
            files_table,
            cfg,
            version,
            SOURCE_FILE_KEYS,
            SOURCE_FILES_DESCRIPTION,
            comments=SOURCE_FILES_COMMENTS,
            user_metadata=commit_metadata("ingest files", input=input_path),
        )

    retry_once_on_conflict("ingest", files_table, append)


def _append_new_documents(
    spark: SparkSession,
    cfg: Config,
    checked: DataFrame,
    table: str,
    summary: IngestSummary,
    valid: int,
    source: str,
) -> None:
    """Append the valid documents whose id the table lacks at its current version, on top of that version only."""
    new_docs, version = rows_missing_from(spark, documents_of(checked), table, cfg.delta.engine, ["id"])
    new_docs = reuse(new_docs)  # counted, then written
    try:
        summary.added = new_docs.count()
        summary.already_present = valid - summary.added
        log("ingest", f"{summary.read} records read from {source}; writing {summary.added} new documents")
        summary.version = version
        if summary.added or version is None:
            summary.version = append_on_snapshot(
                new_docs,
                table,
                cfg,
                version,
                ["id"],
                DOCUMENTS_DESCRIPTION,
                user_metadata=commit_metadata("ingest", source=source),
            ).version
    finally:
        release(new_docs)


def _append_new_rejects(spark: SparkSession, cfg: Config, checked: DataFrame, rejects_table: str) -> None:
    """Append the rejects not recorded yet (same file, record and reason), on top of the version read."""
    keys = ["source_file", "record", "reason"]
    rejects, version = rows_missing_from(spark, rejects_of(checked), rejects_table, cfg.delta.engine, keys)
    if version is not None and rejects.limit(1).count() == 0:
        return
    append_on_snapshot(
        rejects,
        rejects_table,
        cfg,
        version,
        keys,
        REJECTS_DESCRIPTION,
        user_metadata=commit_metadata("ingest rejects"),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser("ingest", __doc__.split("\n\n")[0])
    parser.add_argument(
        "--input",
        default=None,
        help="input file, folder or glob (local or any Hadoop path; a folder's files are read once each, listed "
        "in TABLE_source_files, and read again only when changed); default: the built-in sample",
    )
    parser.add_argument(
        "--table", default="lake/documents", help="Delta table of documents (default: %(default)s)"
    )
    parser.add_argument(
        "--rejects", default=None, help="Delta table of rejected rows (default: TABLE_rejects)"
    )
    parser.add_argument(
        "--format",
        choices=["auto", "csv", "parquet", "json"],
        default=None,
        help="input format (default: by extension)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    def job(args: argparse.Namespace, cfg: Config) -> int:
        input_path = args.input or default_sample()
        rejects = args.rejects or rejects_table_for(args.table)
        spark = get_spark(cfg)
        summary = run(spark, cfg, input_path, args.table, rejects, args.format or cfg.ingest.format)
        log("ingest", summary.describe())
        print(f"documents: {shown(args.table)} (Delta, version {summary.version})")
        print(f"rejects:   {shown(rejects)}")
        if summary.files is not None:
            print(
                f"files:     {shown(source_files_table_for(args.table))} ({summary.files[0]} read this run)"
            )
        print(f"delta engine: {engine_name(spark, cfg.delta.engine)}")
        return 0

    return run_job(build_parser(), argv, job)


if __name__ == "__main__":
    sys.exit(main())
