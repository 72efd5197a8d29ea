"""Maintain job: remove what dead writes left, vacuum unreferenced files, compact small files of a Delta table.

    ./spark-submit.sh jobs/maintain.py --table PATH [--vacuum [--retention-hours N]] [--optimize] [--apply]

Without --apply nothing is deleted: it lists what would go (a dry run, as Delta's VACUUM DRY RUN). On the Delta
connector engine it runs the connector's own OPTIMIZE and VACUUM through Spark; on the delta-rs engine
(``--set delta.engine=delta-rs``) it works through deltalake, with the same semantics, and needs no Spark.

- dead writes: ``_elmo_lake_staging/`` folders of writes that died before their commit (untouched for
  delta.staging_max_age_hours) and the data files they had moved into the table; every write removes these too.
- --vacuum: data files no longer referenced by any version inside the retention period (default: the table's
  delta.deletedFileRetentionDuration, 7 days unless set; never less: older versions stay readable for that long).
- --optimize: compacts the many small files that incremental appends leave into files of about 256 MB (one
  commit; readers of both engines see the same rows; the replaced files go at the next vacuum).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from jobs.lake.delta_tables import dead_writes, remove_dead_writes, resolve_engine, table_uri
from jobs.platform.cli import job_parser, log, run_job
from jobs.platform.config import Config
from jobs.platform.errors import InputError, TableNotFoundError
from jobs.platform.session import get_spark

DEFAULT_RETENTION_HOURS = 168  # Delta's default delta.deletedFileRetentionDuration: interval 1 week


@dataclass
class MaintenanceReport:
    table: str
    applied: bool
    dead_writes: list[str] = field(default_factory=list)  # write ids
    dead_write_files: list[str] = field(default_factory=list)
    vacuum_files: list[str] = field(default_factory=list)
    retention_hours: int | None = None
    optimize: dict | None = None
    engine: str = "delta-rs"  # what maintained it, in words


def table_retention_hours(configuration: dict[str, str]) -> int:
    """The table's delta.deletedFileRetentionDuration in hours ('interval 7 days', 'interval 36 hours', ...)."""
    text = configuration.get("delta.deletedFileRetentionDuration", "")
    match = re.match(r"^\s*interval\s+(\d+)\s+(\w+?)s?\s*$", text, re.IGNORECASE)
    if not match:
        return DEFAULT_RETENTION_HOURS
    amount, unit = int(match.group(1)), match.group(2).lower()
    per_unit = {"week": 168, "day": 24, "hour": 1, "minute": 1 / 60, "second": 1 / 3600}
    return max(0, int(amount * per_unit.get(unit, 24)))


def run(
    cfg: Config,
    table: str,
    vacuum: bool = False,
    retention_hours: int | None = None,
    optimize: bool = False,
    apply: bool = False,
    spark=None,
) -> MaintenanceReport:
    """Maintain ``table``: through ``spark``'s Delta connector when the engine resolves to it, else deltalake."""
    if spark is None and cfg.delta.engine != "delta-rs":
        spark = get_spark(cfg)
    if spark is not None and resolve_engine(spark, cfg.delta.engine) == "spark":
        return _run_with_connector(spark, cfg, table, vacuum, retention_hours, optimize, apply)
    from deltalake import DeltaTable

    uri = table_uri(table)
    if not DeltaTable.is_deltatable(uri):
        raise TableNotFoundError(f"no Delta table at {table}")
    report = MaintenanceReport(table, apply)
    max_age = cfg.delta.staging_max_age_hours
    found = remove_dead_writes(table, max_age) if apply else dead_writes(table, max_age)
    report.dead_writes = [d.write_id for d in found]
    report.dead_write_files = [f for d in found for f in d.files]
    dt = DeltaTable(uri)
    if optimize:
        report.optimize = dt.optimize.compact()
        dt = DeltaTable(uri)
    if vacuum:
        report.retention_hours = _retention(dt.metadata().configuration, retention_hours)
        report.vacuum_files = dt.vacuum(retention_hours=report.retention_hours, dry_run=not apply)
    return report


def _run_with_connector(
    spark, cfg: Config, table: str, vacuum: bool, retention_hours: int | None, optimize: bool, apply: bool
) -> MaintenanceReport:
    """The connector's OPTIMIZE and VACUUM; the table is never opened through delta-rs."""
    from jobs.lake import delta_connector_engine as connector

    if not connector.exists(spark, table):
        raise TableNotFoundError(f"no Delta table at {table}")
    report = MaintenanceReport(table, apply, engine="the Delta connector")
    if optimize:
        metrics = connector.optimize(spark, table)["metrics"]
        report.optimize = {
            "numFilesAdded": metrics["numFilesAdded"],
            "numFilesRemoved": metrics["numFilesRemoved"],
        }
    if vacuum:
        properties = dict(connector.detail(spark, table)["properties"] or {})
        report.retention_hours = _retention(properties, retention_hours)
        report.vacuum_files = connector.vacuum(spark, table, report.retention_hours, dry_run=not apply)
    return report


def _retention(configuration: dict[str, str], asked: int | None) -> int:
    minimum = table_retention_hours(configuration)
    if asked is not None and asked < minimum:
        raise InputError(
            f"--retention-hours {asked} is below the table's retention ({minimum} h, "
            "delta.deletedFileRetentionDuration): readers of older versions and running writes could lose "
            "files. Use at least that, or change the table's property first"
        )
    return asked if asked is not None else minimum


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser("maintain", __doc__.split("\n\n")[0])
    parser.add_argument("--table", required=True, help="the Delta table (a folder, dbfs:/, s3://, ...)")
    parser.add_argument("--vacuum", action="store_true", help="remove data files no version needs any more")
    parser.add_argument(
        "--retention-hours",
        type=int,
        default=None,
        help="vacuum: keep files needed by versions this recent (default and minimum: the table's retention)",
    )
    parser.add_argument("--optimize", action="store_true", help="compact small files (one commit)")
    parser.add_argument(
        "--apply", action="store_true", help="delete for real; without it, only list (dry run)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    def job(args: argparse.Namespace, cfg: Config) -> int:
        report = run(cfg, args.table, args.vacuum, args.retention_hours, args.optimize, args.apply)
        verb = "removed" if report.applied else "would remove (dry run; --apply to delete)"
        log(
            "maintain",
            f"dead writes: {verb} {len(report.dead_writes)} staging folder(s) and "
            f"{len(report.dead_write_files)} uncommitted data file(s)",
        )
        for name in report.dead_write_files:
            print(f"  dead write file: {name}")
        if report.optimize is not None:
            o = report.optimize
            log(
                "maintain",
                f"optimize: {o.get('numFilesRemoved', 0)} files compacted into {o.get('numFilesAdded', 0)}",
            )
        if args.vacuum:
            log(
                "maintain",
                f"vacuum (retention {report.retention_hours} h): {verb} {len(report.vacuum_files)} file(s)",
            )
            for name in report.vacuum_files:
                print(f"  vacuum: {name}")
        print(f"maintained: {args.table}")
        print(f"delta engine: {report.engine}")
        return 0

    return run_job(build_parser(), argv, job)


if __name__ == "__main__":
    sys.exit(main())
