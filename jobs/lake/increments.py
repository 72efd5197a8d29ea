"""Incremental runs: the rows an input table gained since the last run that read it, from the Delta log.

A stage's commit to its output records, in its userMetadata, the input it read and that input's version
(``input``, its table id ``input_id``, ``input_version``; see ``commit_metadata``). The next run (``find_work``):

1. reads the output's version, then finds in the output's newest commits the last one that read this input for
   the same work (the same model and sets, classifier, cleaning fingerprint): the input version it processed;
2. reads the input's log commits after that version (``_delta_log/NNN.json``, the same actions Delta's streaming
   source reads): only the files they added with ``dataChange`` hold rows this stage has not seen. Compaction
   (OPTIMIZE: ``dataChange`` false) adds nothing new; a commit that removed rows (overwrite, DELETE, UPDATE,
   MERGE that updates, deletion vectors) or that compacted files this run has not read means the input was
   rewritten, and the run reads it whole and anti-joins it with the output, as a first run does, saying so in
   one line;
3. reads just those files (Parquet, the table's schema, partition values from the log).

Exactly once: the progress lives in the output's own commits, so it is written atomically with the rows it
covers. A killed run commits nothing and leaves the progress where it was; two runs at once both read the same
output version, and the second one's commit conflicts (``append_on_snapshot``), re-reads and finds nothing new.
Documents in a stage's rejects table (quarantined) are looked up in the output by id on every run, so a fixed
model heals them; that is the one case in which an incremental run still reads the output's ids.

Both engines read the log the same way: the connector through the session (``spark.read.text``, so Spark Connect
and cloud storage too), delta-rs through the table's filesystem. ``delta.incremental = false`` turns this off:
every run anti-joins its whole input with its whole output.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.lake import delta_connector_engine as connector
from jobs.lake import delta_rs_engine as delta_rs
from jobs.lake.delta_tables import (
    read_delta,
    resolve_engine,
    snapshot_version,
    table_exists,
)
from jobs.platform.errors import is_missing_path
from jobs.platform.paths import spark_path
from jobs.platform.table_names import is_table_name

HISTORY_LIMIT = 100  # commits of the output searched for the last run's progress


class Rewritten(Exception):
    """The input's log since the last run does not say which rows are new: read the whole input."""


@dataclass(frozen=True)
class Work:
    """The input rows a run processes, and what its commit must record."""

    rows: DataFrame  # input rows at ``input_version``: new ones only (``since`` set) or all of them
    input_version: int
    output_version: int | None  # the output version read before the progress (None: no output yet)
    since: int | None  # the input version the last run read (None: the whole input)
    all_new: bool  # True: no row of ``rows`` is in the output (no anti-join needed)
    progress: dict = field(default_factory=dict)  # userMetadata facts for this run's commit

    @property
    def incremental(self) -> bool:
        return self.since is not None


def find_work(
    spark: SparkSession,
    cfg,
    stage: str,
    input_table: str,
    output_table: str,
    stream: dict[str, object] | None = None,
    same: dict[str, object] | None = None,
    rejects_table: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Work:
    """The rows of ``input_table`` that ``stage`` has to look at for ``output_table``.

    ``stream``: facts that tell this work apart from other work writing the same output (model_id and sets,
    classifier_id): progress is looked up among commits with the same facts. ``same``: facts that must not have
    changed since (the cleaning fingerprint): if the last commit of this work had others, the whole input is read.
    ``rejects_table``: the stage's quarantined documents are looked up again (see the module's docstring).
    """
    engine = resolve_engine(spark, cfg.delta.engine)
    stream = {"stage": stage, "input": input_table, **(stream or {})}
    input_version = snapshot_version(spark, input_table, engine)
    output_version = snapshot_version(spark, output_table, engine)
    full = read_delta(spark, input_table, engine, version=input_version)
    facts = table_facts(spark, input_table, engine)
    progress = {"input": input_table, "input_id": facts.id, "input_version": input_version}
    since = None
    if cfg.delta.incremental and output_version is not None:
        last = last_progress(spark, output_table, engine, stream)
        if last is not None and all(last.get(k) == v for k, v in (same or {}).items()):
            since = int(last["input_version"])
    if since is None:
        return Work(full, input_version, output_version, None, False, progress)
    try:
        if last.get("input_id", facts.id) != facts.id:
            raise Rewritten(f"was replaced by another table (id {facts.id}) since the last run read it")
        files = files_added(spark, facts, engine, since, input_version)
    except Rewritten as why:
        if log:
            log(
                f"{input_table} {why}: reading all of it and leaving out what {output_table} has, as a first run does"
            )
        return Work(full, input_version, output_version, None, False, progress)
    rows = delta_rs.read_files(spark, facts.root, full.schema, facts.partitions, files)
    quarantined = _quarantined_rows(spark, engine, stage, rejects_table, full)
    if quarantined is not None:
        rows = rows.unionByName(quarantined).dropDuplicates(["id"])
    return Work(rows, input_version, output_version, since, quarantined is None, progress)


def increment_note(work: Work) -> str:
    """For a stage's progress line: which input versions it read, when it read only what was new."""
    if not work.incremental:
        return ""
    if work.since == work.input_version:
        return f" (input unchanged since version {work.since})"
    return f" (what the input gained in versions {work.since + 1}..{work.input_version})"


def last_progress(spark: SparkSession, output_table: str, engine: str, stream: dict) -> dict | None:
    """The userMetadata (as a dict) of the newest commit among the output's last HISTORY_LIMIT that matches
    ``stream`` and recorded an input version, or None."""
    for text in _user_metadata(spark, output_table, engine):
        try:
            facts = json.loads(text) if text else None
        except ValueError:
            continue
        if (
            isinstance(facts, dict)
            and facts.get("writer") == "elmo-lake"
            and facts.get("input_version") is not None
            and all(facts.get(k) == v for k, v in stream.items())
        ):
            return facts
    return None


def _user_metadata(spark: SparkSession, table: str, engine: str) -> list[str | None]:
    """The userMetadata of the table's newest commits, newest first."""
    if engine == "spark":
        rows = spark.sql(f"DESCRIBE HISTORY {connector.identifier(table)} LIMIT {HISTORY_LIMIT}")
        return [r["userMetadata"] for r in rows.select("userMetadata").collect()]
    from deltalake import DeltaTable

    history = DeltaTable(delta_rs.table_uri(table)).history(limit=HISTORY_LIMIT)
    return [entry.get("userMetadata") for entry in history]


def files_added(
    spark: SparkSession, table: TableFacts, engine: str, since: int, until: int
) -> list[tuple[str, dict[str, object]]]:
    """The data files (relative path, partition values) that commits since+1..until added with new rows.

    Raises Rewritten (with the reason) when those commits did anything else to the rows."""
    if until == since:
        return []
    if until < since:
        raise Rewritten(
            f"is at version {until}, older than version {since} that the last run read (replaced)"
        )
    commits = _log_commits(spark, table, engine, since + 1, until)
    added: dict[str, dict[str, object]] = {}
    for version in range(since + 1, until + 1):
        operation = "a commit"
        for action in commits[version]:
            if "commitInfo" in action:
                operation = str(action["commitInfo"].get("operation") or operation)
        for action in commits[version]:
            if "add" in action:
                add = action["add"]
                if add.get("deletionVector"):
                    raise Rewritten(f"had rows deleted in version {version} ({operation}, deletion vectors)")
                if add.get("dataChange", True):
                    added[unquote(add["path"])] = add.get("partitionValues") or {}
            elif "remove" in action:
                remove = action["remove"]
                path = unquote(remove["path"])
                if remove.get("dataChange", True):
                    raise Rewritten(f"had rows removed or rewritten in version {version} ({operation})")
                if path in added:
                    raise Rewritten(
                        f"compacted files holding rows this run has not read yet in version {version} ({operation})"
                    )
            elif "metaData" in action:
                configuration = action["metaData"].get("configuration") or {}
                if configuration.get("delta.columnMapping.mode", "none") != "none":
                    raise Rewritten(f"uses column mapping since version {version}")
    if any("://" in path or path.startswith("/") for path in added):
        raise Rewritten("has data files outside its folder (a shallow clone)")
    return sorted(added.items())


def _log_commits(
    spark: SparkSession, table: TableFacts, engine: str, first: int, last: int
) -> dict[int, list[dict]]:
    """The actions of commits first..last, by version. Raises Rewritten if any commit file is gone (the log was
    cleaned up after a checkpoint)."""
    names = {f"{v:020d}.json": v for v in range(first, last + 1)}
    commits: dict[int, list[dict]] = {v: [] for v in range(first, last + 1)}
    if engine == "spark":
        try:
            lines = (
                spark.read.text([f"{table.root}/_delta_log/{name}" for name in names])
                .select("value", F.col("_metadata.file_name").alias("name"))
                .collect()
            )
        except Exception as exc:
            if is_missing_path(exc):
                raise Rewritten(
                    f"has no log entries for versions {first}..{last} any more (cleaned up)"
                ) from None
            raise
        for line in lines:
            if line["value"].strip():
                commits[names[line["name"]]].append(json.loads(line["value"]))
        return commits
    fs, root = delta_rs.open_table_filesystem(table.root)
    for name, version in names.items():
        try:
            with fs.open_input_stream(f"{root}/_delta_log/{name}") as stream:
                text = stream.read().decode("utf-8")
        except FileNotFoundError:
            raise Rewritten(f"has no log entry for version {version} any more (cleaned up)") from None
        commits[version] = [json.loads(line) for line in text.splitlines() if line.strip()]
    return commits


@dataclass(frozen=True)
class TableFacts:
    """What reading a table's log needs, from one look at the table (DESCRIBE DETAIL / its metadata)."""

    id: str  # the table's id (its metaData's): a table deleted and written anew under the same name has another
    root: str  # its folder, as the engine reads it
    partitions: list[str]


def table_facts(spark: SparkSession, table: str, engine: str) -> TableFacts:
    if engine == "spark":
        detail = connector.detail(spark, table)
        root = str(detail["location"]) if is_table_name(table) else spark_path(table)
        return TableFacts(str(detail["id"]), root.rstrip("/"), list(detail["partitionColumns"] or []))
    from deltalake import DeltaTable

    uri = delta_rs.table_uri(table)
    metadata = DeltaTable(uri).metadata()
    return TableFacts(str(metadata.id), uri, list(metadata.partition_columns))


def _quarantined_rows(
    spark: SparkSession, engine: str, stage: str, rejects_table: str | None, full: DataFrame
) -> DataFrame | None:
    """The input rows the stage quarantined in earlier runs (None if it has none): looked at again every run."""
    if rejects_table is None or not table_exists(spark, rejects_table, engine):
        return None
    ids = read_delta(spark, rejects_table, engine).where(F.col("stage") == stage).select("id").distinct()
    if ids.limit(1).count() == 0:
        return None
    return full.join(ids, "id", "left_semi")


def rows_written(
    spark: SparkSession, table: str, engine: str, before: int | None, after: int
) -> DataFrame | None:
    """The rows commits before+1..after added to ``table`` (a stage's own appends), or None where the log cannot
    say (then compare the two snapshots)."""
    if before is None:
        return None
    facts = table_facts(spark, table, engine)
    try:
        files = files_added(spark, facts, engine, before, after)
    except Rewritten:
        return None
    schema = read_delta(spark, table, engine, version=after).schema
    return delta_rs.read_files(spark, facts.root, schema, facts.partitions, files)
