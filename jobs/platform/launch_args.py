"""Used by spark-submit.sh: turns a job's --conf/--set into spark-submit options (master, spark.* properties).

With --remote-only it prints the config's Spark Connect server (spark.remote) instead, or nothing.

Properties that must be known before the JVM starts (driver memory, master) only take effect this way. The
launcher puts these options first, so anything the user gives spark-submit on the command line wins.
"""

from __future__ import annotations

import argparse
import sys

from jobs.platform.config import load_config
from jobs.platform.errors import ElmoLakeError


def spark_submit_options(conf: str | None, overrides: list[str]) -> list[str]:
    cfg = load_config(conf, overrides)
    options: list[str] = []
    if cfg.spark.master:
        options += ["--master", cfg.spark.master]
    options += ["--name", cfg.spark.app_name]
    conf = dict(cfg.spark.conf)
    # Spark's progress bars only where a person watches a terminal; in logs they are noise.
    conf.setdefault("spark.ui.showConsoleProgress", "true" if sys.stderr.isatty() else "false")
    for key, value in conf.items():
        options += ["--conf", f"{key}={value}"]
    return options + delta_connector_options(cfg.delta.engine) + metastore_options(cfg)


def metastore_options(cfg) -> list[str]:
    """The local metastore's client jar on the driver's class path (jobs/metastore.py), where it is configured."""
    from jobs.platform.local_metastore import launch_options

    return launch_options(cfg)


def delta_connector_options(engine: str) -> list[str]:
    """--jars (the installed Delta connector: spark-submit ships them to a cluster's driver and executors) and
    Delta's extension and catalog, unless delta.engine is 'delta-rs'."""
    from jobs.platform.delta_connector_jars import installed, spark_submit_options, wants_connector

    connector = installed() if wants_connector(engine) else None
    return spark_submit_options(connector) if connector is not None else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--conf", default=None)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--remote-only", action="store_true")  # print the config's spark.remote, or nothing
    args, _ = parser.parse_known_args(argv)
    try:
        if args.remote_only:
            sys.stdout.write(load_config(args.conf, args.set).spark.remote or "")
            return 0
        options = spark_submit_options(args.conf, args.set)
    except ElmoLakeError as exc:
        print(f"spark-submit.sh: error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write("\0".join(options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
