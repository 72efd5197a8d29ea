"""SQL job: query the lake's Delta tables with Spark SQL, on any Spark, with or without the Delta connector.

    ./spark-submit.sh jobs/sql.py --lake DIR [--table NAME=PATH ...] "SELECT ..." [--csv FILE | --output TABLE]

Every Delta table under DIR becomes a temporary view named after its folder (out/sample/train_embeddings ->
train_embeddings), read through elmo-lake's reader, so each query sees one snapshot on both Delta engines.
Vector functions on array<float> are defined in SQL, so they run in the JVM with no Python worker:
cosine_similarity(a, b), dot_product(a, b), l2_norm(a) (NULL when the lengths differ or a norm is 0).
Without --csv/--output the result is printed as a table, cut at --limit rows (it says when it cut).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from jobs.lake.delta_tables import (
    commit_metadata,
    engine_name,
    open_table_filesystem,
    read_delta,
    table_uri,
    write_delta,
)
from jobs.platform.cli import job_parser, log, run_job
from jobs.platform.config import Config
from jobs.platform.errors import InputError
from jobs.platform.paths import local_path
from jobs.platform.session import get_spark

# SQL-language functions: the same text works in Databricks SQL (CREATE FUNCTION ... RETURN, see README).
# {schema} is where the function's own calls of the others resolve: "" for temporary functions, "lake." for
# persistent ones (jobs/serve_sql.py), whose bodies must not depend on a client's current schema.
VECTOR_FUNCTIONS = {
    "dot_product": (
        "a ARRAY<FLOAT>, b ARRAY<FLOAT>",
        "aggregate(zip_with(a, b, (x, y) -> CAST(x AS DOUBLE) * y), CAST(0 AS DOUBLE), (acc, v) -> acc + v)",
    ),
    "l2_norm": (
        "a ARRAY<FLOAT>",
        "sqrt(aggregate(a, CAST(0 AS DOUBLE), (acc, x) -> acc + CAST(x AS DOUBLE) * x))",
    ),
    "cosine_similarity": (
        "a ARRAY<FLOAT>, b ARRAY<FLOAT>",
        "{schema}dot_product(a, b) / nullif({schema}l2_norm(a) * {schema}l2_norm(b), 0)",
    ),
}


def register_vector_functions(spark: SparkSession, schema: str | None = None) -> None:
    """cosine_similarity, dot_product and l2_norm: temporary SQL functions of this session (classic or Connect),
    or, given a ``schema``, persistent functions of that schema in the catalog, which every session of every
    client sees (the SQL endpoint's)."""
    from jobs.platform.table_names import quoted

    for name, (params, body) in VECTOR_FUNCTIONS.items():
        if schema is None:
            spark.sql(
                f"CREATE OR REPLACE TEMPORARY FUNCTION {name}({params}) RETURNS DOUBLE "
                f"RETURN {body.format(schema='')}"
            )
        else:
            prefix = quoted(schema) + "."
            spark.sql(
                f"CREATE OR REPLACE FUNCTION {prefix}{name}({params}) RETURNS DOUBLE "
                f"RETURN {body.format(schema=prefix)}"
            )


def lake_tables(lake: str) -> dict[str, str]:
    """Every Delta table under ``lake`` (a folder with a _delta_log), by view name: its folder's name."""
    import pyarrow.fs as pafs

    fs, root = open_table_filesystem(table_uri(lake))
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        raise InputError(f"--lake {lake} is not a folder")
    found: dict[str, list[str]] = {}
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        if info.type == pafs.FileType.Directory and info.base_name == "_delta_log":
            folder = info.path[: -len("/_delta_log")]
            if any(part.startswith(("_", ".")) for part in folder[len(root) :].split("/") if part):
                continue  # staging and other hidden folders
            found.setdefault(view_name(folder.rsplit("/", 1)[-1]), []).append(folder)
    clashes = {name: paths for name, paths in found.items() if len(paths) > 1}
    if clashes:
        listed = "; ".join(f"{name}: {', '.join(paths)}" for name, paths in clashes.items())
        raise InputError(
            f"several tables under {lake} would be named alike ({listed}); name them with --table"
        )
    uri = table_uri(lake)
    prefix = uri.split("://", 1)[0] + "://" if "://" in uri else ""  # object stores: pyarrow drops the scheme
    return {name: prefix + paths[0] for name, paths in found.items()}


def view_name(folder: str) -> str:
    name = re.sub(r"\W", "_", folder)
    return f"t_{name}" if name[:1].isdigit() else name


def register_tables(spark: SparkSession, cfg: Config, tables: dict[str, str]) -> None:
    for name, path in sorted(tables.items()):
        read_delta(spark, path, cfg.delta.engine).createOrReplaceTempView(name)


def format_value(value, width: int = 60) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, list):
        head = ", ".join(format_value(v, 12) for v in value[:4])
        return f"[{head}{', …' if len(value) > 4 else ''}] ({len(value)})"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def render(columns: list[str], rows: list[tuple]) -> str:
    """A plain text table, as a person reads it in a terminal."""
    cells = [[format_value(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |", line]
    out += ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) + " |" for r in cells]
    return "\n".join([*out, line])


def write_csv(df: DataFrame, path: str) -> int:
    """Every row as CSV (arrays and maps as JSON), written atomically; returns the row count."""
    path = local_path(path)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{path}.tmp"
    count = 0
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(df.columns)
        for row in df.toLocalIterator():
            writer.writerow(
                [json.dumps(v) if isinstance(v, (list, dict)) else ("" if v is None else v) for v in row]
            )
            count += 1
    os.replace(tmp, path)
    return count


def run(
    spark: SparkSession,
    cfg: Config,
    query: str,
    lake: str | None = None,
    tables: dict[str, str] | None = None,
) -> DataFrame:
    """The query's DataFrame, with the lake's tables as views and the vector functions registered."""
    named = lake_tables(lake) if lake else {}
    named.update(tables or {})
    if not named:
        raise InputError("no tables: give --lake DIR (a folder of Delta tables) or --table NAME=PATH")
    register_tables(spark, cfg, named)
    register_vector_functions(spark)
    log("sql", f"tables: {', '.join(sorted(named))}")
    try:
        return spark.sql(query)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"the query failed: {first} (tables: {', '.join(sorted(named))})") from None


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser("sql", __doc__.split("\n\n")[0])
    parser.add_argument(
        "query", help='the SQL query, e.g. "SELECT id, l2_norm(embedding) FROM train_embeddings"'
    )
    parser.add_argument(
        "--lake", default=None, help="a folder whose Delta tables become views named by folder"
    )
    parser.add_argument(
        "--table",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="one more table as a view (repeatable)",
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--csv", default=None, help="write every row of the result to this CSV file")
    target.add_argument("--output", default=None, help="write the result to this new Delta table")
    parser.add_argument("--limit", type=int, default=20, help="rows printed (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    def job(args: argparse.Namespace, cfg: Config) -> int:
        tables = {}
        for item in args.table:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise InputError(f"--table {item!r}: expected NAME=PATH")
            tables[view_name(name)] = path
        spark = get_spark(cfg)
        result = run(spark, cfg, args.query, args.lake, tables)
        if args.csv:
            print(f"{write_csv(result, args.csv)} rows written to {args.csv}")
        elif args.output:
            written = write_delta(
                result,
                args.output,
                mode="error",
                engine=cfg.delta.engine,
                user_metadata=commit_metadata("sql"),
            )
            print(
                f"{written.num_records} rows written to {args.output} (Delta, version {written.version}, by "
                f"{engine_name(spark, cfg.delta.engine)})"
            )
        else:
            rows = result.limit(args.limit + 1).collect()
            print(render(result.columns, [tuple(r) for r in rows[: args.limit]]))
            more = (
                "; more rows exist: --limit N to see more, --csv FILE for all"
                if len(rows) > args.limit
                else ""
            )
            print(f"({min(len(rows), args.limit)} rows shown{more})")
        return 0

    return run_job(build_parser(), argv, job)


if __name__ == "__main__":
    sys.exit(main())
