"""What every job's command line shares: --conf and --set, progress lines, and a one-line reason on failure."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Sequence

from jobs.platform.config import Config, load_config
from jobs.platform.errors import ElmoLakeError

CONF_HELP = (
    "configuration: a built-in name (local, cluster, databricks, gpu) or a TOML file; default: local. "
    "Settings spark-submit was given (--master, --conf) win over the file's."
)


def job_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--conf", metavar="FILE", default=None, help=CONF_HELP)
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one setting by its dotted name, e.g. --set ingest.format=csv or "
        "--set spark.conf.spark.sql.shuffle.partitions=4 (repeatable)",
    )
    return parser


def log(stage: str, message: str) -> None:
    """A progress line on stderr, where Spark's own progress goes too."""
    print(f"[{time.strftime('%H:%M:%S')}] {stage}: {message}", file=sys.stderr, flush=True)


def run_job(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    run: Callable[[argparse.Namespace, Config], int | None],
) -> int:
    """Parse, load config, call ``run(args, cfg)``; any failure becomes one line on stderr and exit code 1.

    Set ELMO_LAKE_DEBUG=1 to see the full traceback as well.
    """
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.conf, args.set)
        from jobs.platform.session import want_catalog
        from jobs.platform.table_names import names_in

        want_catalog(names_in(args))
        return int(run(args, cfg) or 0)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for the user; the traceback on request
        if os.environ.get("ELMO_LAKE_DEBUG"):
            traceback.print_exc()
        print(f"{parser.prog}: error: {one_line(exc)}", file=sys.stderr)
        return 1


def one_line(exc: BaseException) -> str:
    if isinstance(exc, ElmoLakeError):
        return str(exc).replace("\n", " ")
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if "exception was thrown from the Python worker" in first:
        # A task's Python error: its last "SomeError: message" line is the reason, not Spark's wrapper.
        causes = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception): ", line)]
        first = causes[-1] if causes else first
    return f"{type(exc).__name__}: {first} (set ELMO_LAKE_DEBUG=1 for the traceback)"
