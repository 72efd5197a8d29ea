"""Tables by name: which arguments are catalog names, and registering a folder's Delta table under a name.

Wherever a job takes a table (``--table``, ``--input``, ``--output``, ``--embeddings``, ``--labels``, ...), it takes a
path or a name:

- a **name** is ``schema.table`` or ``catalog.schema.table`` (letters, digits, underscores), e.g.
  ``lake.train_embeddings`` or, on Databricks, ``main.default.train_embeddings``. It goes through the session's
  catalog (``catalog.metastore``: Unity Catalog on Databricks, elmo-lake's local Hive metastore on one machine);
- anything else is a **path**, as before: a folder, ``dbfs:/``, ``/Volumes/...``, ``s3://...``. A single word
  (``out``) stays a relative folder, so write the default schema as ``default.out``; a value that names an
  existing file or folder, or ends like a data file (``tweets.csv``), is a path too.

Names need the Delta connector (``delta.engine`` 'spark' or 'auto' with the connector): delta-rs reads and writes
folders and knows no catalog.
"""

from __future__ import annotations

import os
import re
from argparse import Namespace

from pyspark.sql import SparkSession

from jobs.platform.errors import InputError

_PART = r"[A-Za-z_][A-Za-z0-9_]*"
_NAME = re.compile(rf"^{_PART}(\.{_PART}){{1,2}}$")
# How data files end: ``tweets.csv`` is a file to read, never a table named csv in schema tweets.
_FILE_ENDINGS = frozenset(
    "csv tsv txt json jsonl ndjson parquet orc avro xml gz bz2 zip zst tar tgz delta hdf5 h5 html".split()
)
# The job options that name tables (a job's --input may be a file instead: endings and existing paths decide).
TABLE_OPTIONS = (
    "table",
    "input",
    "output",
    "rejects",
    "embeddings",
    "labels",
    "clean",
    "runs",
    "vocabulary",
    "schema",
)


def is_table_name(value: object) -> bool:
    """``schema.table`` or ``catalog.schema.table``, and not a path (see the module's doc)."""
    text = str(value)
    if not _NAME.match(text):
        return False
    if text.rsplit(".", 1)[1].lower() in _FILE_ENDINGS:
        return False
    return not os.path.exists(text)


def names_in(args: Namespace) -> list[str]:
    """The table names among a job's parsed options (``--schema`` counts: the pipeline registers under it)."""
    found = []
    for option in TABLE_OPTIONS:
        value = getattr(args, option, None)
        if isinstance(value, str) and (option == "schema" or is_table_name(value)):
            found.append(value)
    return found


def shown(table: str) -> str:
    """A table as a job's last lines name it: a name as given, a local folder as an absolute path, a URI as is."""
    from jobs.platform.paths import spark_path

    return table if is_table_name(table) else spark_path(table)


def quoted(name: str) -> str:
    """The name as SQL takes it, each part in backticks: `lake`.`train_embeddings`."""
    return ".".join("`" + part.replace("`", "``") + "`" for part in name.split("."))


def sql_string(text: str) -> str:
    """``text`` as a quoted Spark SQL string literal (a location, a comment)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def schema_of(name: str) -> str:
    """``lake.t`` -> ``lake``; ``main.lake.t`` -> ``main.lake``."""
    return name.rsplit(".", 1)[0]


def check_schema_name(schema: str) -> str:
    """``--schema``: ``name`` or ``catalog.name``; anything else is an InputError saying what is allowed."""
    if not re.match(rf"^{_PART}(\.{_PART})?$", schema):
        raise InputError(
            f"--schema {schema!r}: a schema is a name (letters, digits, _) or catalog.name, e.g. lake or "
            "main.lake"
        )
    return schema


def refuse_on_delta_rs(name: str) -> None:
    raise InputError(
        f"{name} is a table name, and table names go through the Spark catalog, which the delta-rs engine does not "
        "use: give the table's folder instead, or run with the Delta connector (./setup.sh installs it; "
        "delta.engine 'auto' or 'spark')"
    )


def ensure_schema(spark: SparkSession, schema: str) -> None:
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {quoted(schema)}")


def location_of(spark: SparkSession, name: str) -> str | None:
    """Where the named table's files are (DESCRIBE DETAIL's location), or None if there is no such table."""
    if not spark.catalog.tableExists(name):
        return None
    return spark.sql(f"DESCRIBE DETAIL {quoted(name)}").first()["location"]


def register(spark: SparkSession, name: str, location: str) -> bool:
    """Register the Delta table at ``location`` as ``name`` (an external table: the files stay where they are;
    description and column comments come from the table's own metadata). True if it was registered now, False
    if ``name`` already names that table. A name taken by another table is an InputError naming both places."""
    from jobs.platform.paths import spark_path

    location = spark_path(location)
    current = location_of(spark, name)
    if current is not None:
        if _same_place(current, location):
            return False
        raise InputError(
            f"table {name} already exists at {current}, not at {location}: choose another --schema, or drop it "
            f"first (DROP TABLE {name} drops the name only for a table registered from a folder)"
        )
    ensure_schema(spark, schema_of(name))
    spark.sql(f"CREATE TABLE IF NOT EXISTS {quoted(name)} USING delta LOCATION {sql_string(location)}")
    return True


def _same_place(a: str, b: str) -> bool:
    def plain(uri: str) -> str:
        uri = uri.rstrip("/")
        return uri[len("file:") :].lstrip("/") if uri.startswith("file:") else uri.lstrip("/")

    return plain(a) == plain(b)
