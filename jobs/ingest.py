"""Ingest job: CSV, Parquet or JSON text files -> a Delta table of documents, and a table of rejected rows.

    ./spark-submit.sh jobs/ingest.py --input PATH --table PATH [--rejects PATH] [--format csv|parquet|json]

Documents are ``id`` (string), ``text``, ``label`` (0/1 or null), ``source_file``, ``ingested_at``. A row with a
missing or blank id or text, a label other than 0/1, or an id seen earlier in the input is not a document: it
goes to the rejects table with the reason and where it came from. Ids already in the table are skipped, so
re-running on the same input adds nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.cli import job_parser, log, run_job
from jobs.config import Config
from jobs.delta_tables import read_delta, table_exists, table_version, write_delta
from jobs.errors import InputError
from jobs.paths import default_sample
from jobs.session import get_spark

DOCUMENTS_DESCRIPTION = (
    "elmo-lake documents: id (string, unique), text (as ingested), label (0/1, null when unlabelled), "
    "source_file, ingested_at (UTC)"
)
REJECTS_DESCRIPTION = "elmo-lake ingest rejects: the input rows that are not documents, with the reason"
REJECT_COLUMNS = ["source_file", "record", "id", "text", "label", "reason", "ingested_at"]


@dataclass
class IngestSummary:
    table: str
    rejects_table: str
    read: int = 0
    added: int = 0
    already_present: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    version: int | None = None

    def describe(self) -> str:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.rejected.items())) or "none"
        return (
            f"read {self.read} rows: added {self.added}, skipped {self.already_present} already in the table, "
            f"rejected {sum(self.rejected.values())} ({reasons})"
        )


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


def read_input(spark: SparkSession, path: str, fmt: str, cfg: Config) -> DataFrame:
    """The input's rows with every column as it came, plus ``source_file`` and ``_order`` (input order)."""
    fmt = input_format(path, fmt)
    try:
        if fmt == "csv":
            reader = (
                spark.read.option("header", True)
                .option("multiLine", True)  # quoted tweets that span lines
                .option("quote", '"')
                .option("escape", '"')
                .option("sep", cfg.ingest.csv_delimiter)
                .option("encoding", cfg.ingest.csv_encoding)
                .option("mode", "PERMISSIVE")
                .option("inferSchema", False)
            )
            raw = reader.csv(path)
        elif fmt == "json":
            raw = spark.read.option("mode", "PERMISSIVE").json(path)
        else:
            raw = spark.read.parquet(path)
    except Exception as exc:
        if "PATH_NOT_FOUND" in str(exc) or "does not exist" in str(exc):
            raise InputError(f"input {path} does not exist") from None
        raise InputError(f"cannot read {path} as {fmt}: {str(exc).splitlines()[0]}") from None
    return raw.withColumn("source_file", F.col("_metadata.file_path")).withColumn(
        "_order", F.monotonically_increasing_id()
    )


def pick_text_column(columns: list[str], configured: str) -> str:
    if configured != "auto":
        return configured
    for candidate in ("text", "tweet"):
        if candidate in columns:
            return candidate
    raise InputError(f"input has no 'text' or 'tweet' column (columns: {columns}); set ingest.text_column")


def validate_documents(
    raw: DataFrame, id_column: str, text_column: str, label_column: str | None, ingested_at: dt.datetime
) -> DataFrame:
    """Every input row with ``reason`` null (a document) or saying why it is rejected. No I/O."""
    data_columns = [c for c in raw.columns if c not in ("source_file", "_order")]
    for name, setting in ((id_column, "ingest.id_column"), (text_column, "ingest.text_column")):
        if name not in data_columns:
            raise InputError(f"input has no column {name!r} (columns: {data_columns}); set {setting}")
    has_label = label_column is not None and label_column in data_columns
    label_raw = F.trim(F.col(label_column).cast("string")) if has_label else F.lit(None).cast("string")
    rows = raw.select(
        F.trim(F.col(id_column).cast("string")).alias("id"),
        F.col(text_column).cast("string").alias("text"),
        label_raw.alias("label_raw"),
        "source_file",
        "_order",
    )
    record = F.row_number().over(Window.partitionBy("source_file").orderBy("_order"))
    rows = rows.withColumn("record", record)
    blank = lambda c: F.col(c).isNull() | (F.trim(F.col(c)) == "")  # noqa: E731
    row_reason = (
        F.when(blank("id"), F.lit("missing id"))
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
    engine = cfg.delta.engine
    summary = IngestSummary(table=table, rejects_table=rejects_table)
    raw = read_input(spark, input_path, fmt if fmt else cfg.ingest.format, cfg)
    text_column = pick_text_column(raw.columns, cfg.ingest.text_column)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    checked = validate_documents(raw, cfg.ingest.id_column, text_column, cfg.ingest.label_column, now).cache()
    try:
        docs = documents_of(checked)
        rejects = rejects_of(checked)
        if table_exists(spark, table, engine):
            existing_ids = read_delta(spark, table, engine).select("id")
            new_docs = docs.join(existing_ids, "id", "left_anti")
        else:
            new_docs = docs
        counts = checked.groupBy("reason").count().collect()
        summary.read = sum(r["count"] for r in counts)
        summary.rejected = {r["reason"]: r["count"] for r in counts if r["reason"] is not None}
        valid = sum(r["count"] for r in counts if r["reason"] is None)
        new_docs = new_docs.cache()
        summary.added = new_docs.count()
        summary.already_present = valid - summary.added
        log("ingest", f"{summary.read} rows read from {input_path}; writing {summary.added} new documents")
        if summary.added or not table_exists(spark, table, engine):
            result = write_delta(
                new_docs,
                table,
                mode="append",
                engine=engine,
                description=DOCUMENTS_DESCRIPTION,
                target_file_rows=cfg.delta.target_file_rows,
            )
            summary.version = result.version
        else:
            summary.version = table_version(table)
        if table_exists(spark, rejects_table, engine):
            seen = read_delta(spark, rejects_table, engine).select("source_file", "record", "reason")
            rejects = rejects.join(seen, ["source_file", "record", "reason"], "left_anti")
            write_rejects = rejects.limit(1).count() > 0
        else:
            write_rejects = True
        if write_rejects:
            write_delta(
                rejects,
                rejects_table,
                mode="append",
                engine=engine,
                description=REJECTS_DESCRIPTION,
                target_file_rows=cfg.delta.target_file_rows,
            )
    finally:
        checked.unpersist()
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser("ingest", __doc__.split("\n\n")[0])
    parser.add_argument(
        "--input",
        default=None,
        help="input file or folder (local or any Hadoop path); default: the built-in sample",
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
        rejects = args.rejects or args.table.rstrip("/") + "_rejects"
        spark = get_spark(cfg)
        summary = run(spark, cfg, input_path, args.table, rejects, args.format or cfg.ingest.format)
        log("ingest", summary.describe())
        print(
            f"documents: {os.path.abspath(args.table) if '://' not in args.table else args.table} "
            f"(Delta, version {summary.version})"
        )
        print(f"rejects:   {os.path.abspath(rejects) if '://' not in rejects else rejects}")
        return 0

    return run_job(build_parser(), argv, job)


if __name__ == "__main__":
    sys.exit(main())
