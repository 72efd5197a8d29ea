"""Clean job: a Delta table of documents -> a Delta table of cleaned, lemmatized tokens (what embed consumes).

    ./spark-submit.sh jobs/clean.py --input DOCS_TABLE --output CLEAN_TABLE [--rejects TABLE]

Output columns: ``id``, ``clean_text``, ``tokens`` (array<string>), ``empty`` (nothing left after cleaning: no
tokens), ``truncated`` (the text was cut to ``clean.max_chars``), ``clean_fingerprint`` (a hash of the cleaning
settings and spaCy model). Re-running adds only ids that are not cleaned yet; a run with other settings
re-cleans the whole table. A document that cannot be cleaned is quarantined in the rejects table (default
CLEAN_TABLE_rejects) with its reason, and retried by the next run (``jobs/lake/quarantine.py``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf

from jobs.lake.delta_tables import (
    add_missing_columns,
    commit_metadata,
    engine_name,
    read_delta,
    retry_once_on_conflict,
    snapshot_version,
    write_delta,
)
from jobs.lake.increments import find_work, increment_note, rows_written
from jobs.lake.quarantine import Quarantined, quarantine, rejects_table_for, warning_line, with_retry_flag
from jobs.platform.cli import job_parser, log, run_job
from jobs.platform.config import Config
from jobs.platform.errors import InputError, SetupError
from jobs.platform.session import default_parallelism, get_spark, release, reuse, ship_code
from udfs.clean import CleanSettings, SpacyModelMissing, make_clean_function, resolve_spacy_model
from udfs.row_failures import fault_pattern

CLEAN_DESCRIPTION = (
    "elmo-lake cleaned documents: id, clean_text, tokens (array<string>, the embed stage's input), empty (no "
    "tokens left after cleaning), truncated (cut to clean.max_chars), clean_fingerprint (hash of the cleaning "
    "settings and spaCy model)"
)
CLEAN_COMMENTS = {
    "id": "document id, as in the documents table",
    "clean_text": "the cleaned text: tokens joined by single spaces",
    "tokens": "cleaned tokens (spaCy lemmas when lemmatization is on)",
    "empty": "true when nothing was left after cleaning (no tokens, not embedded)",
    "truncated": "true when the text was longer than clean.max_chars and was cut at whitespace before it",
    "clean_fingerprint": "hash of the cleaning settings and the spaCy model that produced the row",
}


@dataclass
class CleanSummary:
    output: str
    cleaned: int
    empty: int
    fingerprint: str
    mode: str
    version: int | None
    quarantined: Quarantined | None = None


def clean_settings(cfg: Config) -> CleanSettings:
    c = cfg.clean
    return CleanSettings(
        remove_urls=c.remove_urls,
        mentions=c.mentions,
        hashtag_symbol=c.hashtag_symbol,
        profanity=c.profanity,
        remove_punctuation=c.remove_punctuation,
        punctuation=c.punctuation,
        lowercase=c.lowercase,
        remove_digits=c.remove_digits,
        collapse_whitespace=c.collapse_whitespace,
        lemmatize=c.lemmatize,
        spacy_model=c.spacy_model,
        spacy_fallback=c.spacy_fallback,
        spacy_batch_size=c.spacy_batch_size,
        max_chars=c.max_chars,
    )


def check_spacy(settings: CleanSettings) -> tuple[str, str]:
    """On the driver, before any task: the spaCy model to use, or a SetupError with the install command."""
    if not settings.lemmatize:
        return "none", "none"
    try:
        model, version = resolve_spacy_model(settings)
    except SpacyModelMissing as exc:
        raise SetupError(str(exc)) from None
    if model == "blank:en":
        log(
            "clean",
            f"spaCy model {settings.spacy_model!r} is not installed: falling back to a blank English "
            "pipeline with the lookup lemmatizer (clean.spacy_fallback=blank)",
        )
    elif model != settings.spacy_model:
        log("clean", f"spaCy model {settings.spacy_model!r} is served by its PyPI build {model!r}")
    return model, version


def clean_documents(
    docs: DataFrame,
    settings: CleanSettings,
    model: str,
    fingerprint: str,
    max_reject_fraction: float = 1.0,
    fault: str | None = None,
) -> DataFrame:
    """documents (id, text[, retry]) -> cleaned rows, and ``error`` (null, or why the row could not be cleaned).
    No I/O. ``retry`` (see ``jobs/quarantine.with_retry_flag``) marks rows quarantined by an earlier run."""
    # Non-deterministic for the optimizer's sake, not ours: a deterministic UDF under a filter on its own output
    # (the callers' ``error IS NULL``) is evaluated twice, once below the pushed-down filter and once above it,
    # so spaCy ran twice over every document and each task held two Python workers
    clean = pandas_udf(
        make_clean_function(settings, model, max_reject_fraction, fault),
        "clean_text string, tokens array<string>, truncated boolean, error string",
    ).asNondeterministic()
    retry = F.col("retry") if "retry" in docs.columns else F.lit(False)
    cleaned = docs.select("id", clean(F.col("id"), F.col("text"), retry).alias("c"))
    return cleaned.select(
        "id",
        F.col("c.clean_text").alias("clean_text"),
        F.col("c.tokens").alias("tokens"),
        (F.size("c.tokens") == 0).alias("empty"),
        F.col("c.truncated").alias("truncated"),
        F.lit(fingerprint).alias("clean_fingerprint"),
        F.col("c.error").alias("error"),
    )


def run(
    spark: SparkSession, cfg: Config, input_table: str, output_table: str, rejects_table: str | None = None
) -> CleanSummary:
    engine = cfg.delta.engine
    settings = clean_settings(cfg)
    model, version = check_spacy(settings)
    fingerprint = settings.fingerprint(model, version)
    docs = read_delta(spark, input_table, engine)
    for column in ("id", "text"):
        if column not in docs.columns:
            raise InputError(
                f"{input_table} has no column {column!r} (columns: {docs.columns}); is it a documents table?"
            )
    return retry_once_on_conflict(
        "clean",
        output_table,
        lambda: _clean_missing(
            spark,
            cfg,
            input_table,
            output_table,
            rejects_table or rejects_table_for(output_table),
            settings,
            model,
            fingerprint,
        ),
    )


def _clean_missing(
    spark: SparkSession,
    cfg: Config,
    input_table: str,
    output_table: str,
    rejects_table: str,
    settings: CleanSettings,
    model: str,
    fingerprint: str,
) -> CleanSummary:
    """Clean the ids the output lacks at its current version (all of them if the settings changed): of the
    input's rows, those added since the last run with these settings (``jobs/lake/increments.py``), else all."""
    engine = cfg.delta.engine
    mode = "append"
    work = find_work(
        spark,
        cfg,
        "clean",
        input_table,
        output_table,
        same={"clean_fingerprint": fingerprint},
        rejects_table=rejects_table,
        log=lambda line: log("clean", line),
    )
    docs = work.rows.select("id", "text")
    version = work.output_version
    if version is not None and not work.all_new:
        existing = read_delta(spark, output_table, engine, version=version)
        fingerprints = {r[0] for r in existing.select("clean_fingerprint").distinct().collect()}
        if fingerprints <= {fingerprint}:
            docs = docs.join(existing.select("id"), "id", "left_anti")
        else:
            log("clean", "cleaning settings changed since the table was written: re-cleaning every document")
            mode = "overwrite"
    partitions = cfg.clean.partitions or default_parallelism(spark)
    docs = reuse(docs.repartition(partitions))  # counted, then cleaned: a table read, cheap to recompute
    todo = docs.count()
    if todo == 0 and mode == "append" and version is not None:
        release(docs)
        log("clean", f"nothing to clean: every document is in {output_table} already{increment_note(work)}")
        return CleanSummary(output_table, 0, 0, fingerprint, mode, version)
    log(
        "clean",
        f"cleaning {todo} documents with spaCy {model} ({partitions} partitions){increment_note(work)}",
    )
    ship_code(spark)
    fault = fault_pattern("clean")
    flagged = with_retry_flag(spark, cfg, docs, "clean", rejects_table)
    cleaned = clean_documents(flagged, settings, model, fingerprint, cfg.clean.max_reject_fraction, fault)
    output = cleaned.where(F.col("error").isNull()).drop("error")
    # a table from before a column existed (truncated) gains it, as a null column, before it is overwritten;
    # the overwrite then commits on top of that ALTER TABLE
    if mode == "overwrite" and add_missing_columns(
        spark, output_table, engine, output.schema, CLEAN_COMMENTS
    ):
        version = snapshot_version(spark, output_table, engine)
    try:
        result = write_delta(
            output,
            output_table,
            mode=mode,
            engine=engine,
            description=CLEAN_DESCRIPTION,
            comments=CLEAN_COMMENTS,
            target_file_rows=cfg.delta.target_file_rows,
            read_version=version,
            key_columns=["id"],
            staging_max_age_hours=cfg.delta.staging_max_age_hours,
            user_metadata=commit_metadata(
                "clean", spacy_model=model, clean_fingerprint=fingerprint, **work.progress
            ),
        )
        quarantined = None
        # fewer rows written than documents given: some failed (they are run again for their reason)
        if result.num_records != todo:
            quarantined = quarantine(
                spark,
                cfg,
                "clean",
                docs.join(
                    read_delta(spark, output_table, engine, result.version).select("id"), "id", "left_anti"
                ),
                lambda rows: clean_documents(rows, settings, model, fingerprint, 1.0, fault).select(
                    "id", F.col("error").alias("reason")
                ),
                rejects_table,
                fingerprint,
            )
    finally:
        release(docs)
    # spaCy runs once: the new empty rows are counted in the table (one boolean column), not by cleaning twice
    written = rows_written(spark, output_table, engine, version, result.version) if mode == "append" else None
    if written is not None:  # this run's commit, from the log: the cost follows the run, not the table
        empty = written.where(F.col("empty")).count()
    else:
        empty = count_empty(spark, output_table, engine, result.version)
        if mode == "append":
            empty -= count_empty(spark, output_table, engine, version)
    return CleanSummary(
        output_table, result.num_records, empty, fingerprint, mode, result.version, quarantined
    )


def count_empty(spark: SparkSession, table: str, engine: str, version: int | None) -> int:
    if version is None:
        return 0
    return read_delta(spark, table, engine, version=version).where(F.col("empty")).count()


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser("clean", __doc__.split("\n\n")[0])
    parser.add_argument(
        "--input", default="lake/documents", help="Delta table of documents (default: %(default)s)"
    )
    parser.add_argument(
        "--output", default="lake/clean", help="Delta table of cleaned tokens (default: %(default)s)"
    )
    parser.add_argument(
        "--rejects",
        default=None,
        help="Delta table of the documents that could not be cleaned (default: OUTPUT_rejects)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    def job(args: argparse.Namespace, cfg: Config) -> int:
        spark = get_spark(cfg)
        summary = run(spark, cfg, args.input, args.output, args.rejects)
        log(
            "clean",
            f"cleaned {summary.cleaned} documents ({summary.empty} empty after cleaning), {summary.mode}",
        )
        if summary.quarantined and summary.quarantined.documents:
            log("clean", warning_line("clean", summary.quarantined))
        print(f"clean: {args.output} (Delta, version {summary.version}, {summary.fingerprint})")
        print(f"delta engine: {engine_name(spark, cfg.delta.engine)}")
        return 0

    return run_job(build_parser(), argv, job)


if __name__ == "__main__":
    sys.exit(main())
