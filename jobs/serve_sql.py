"""SQL endpoint: Spark's Thrift JDBC/ODBC server over the lake's tables, queried by name from any SQL client.

    ./spark-submit.sh jobs/serve_sql.py --schema NAME [--lake DIR] [--host 127.0.0.1] [--port 10000]

--schema NAME serves the tables of that schema (``jobs/pipeline.py --schema NAME`` registers them); with
--lake DIR, every Delta table under DIR is registered first under --schema (default: lake) by its folder name.
Clients speak HiveServer2's protocol: beeline, JDBC (BI tools, DBeaver), ODBC and Python DB-API clients
(impyla, PyHive). Every query reads the tables' current Delta snapshot, so rows that later jobs commit are seen
by the next query. cosine_similarity, dot_product and l2_norm are persistent functions of the schema (and of
``default``), the same definitions as jobs/sql.py's, so every client session has them.

It prints the JDBC URL when it is ready and runs until SIGTERM or Ctrl-C, then stops the server and exits 0.
It binds to 127.0.0.1 unless --host says otherwise, and has no authentication of its own: see the README before
binding it to other hosts. It is meant for reading, but a client can run any SQL the session allows.
"""

from __future__ import annotations

import argparse
import errno
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence

from pyspark.sql import SparkSession

from jobs.lake.delta_tables import resolve_engine
from jobs.platform.cli import job_parser, log, run_job
from jobs.platform.config import Config
from jobs.platform.errors import InputError, SetupError
from jobs.platform.session import get_spark, is_connect, want_catalog
from jobs.platform.table_names import check_schema_name, ensure_schema, quoted, refuse_on_delta_rs, register
from jobs.sql import lake_tables, register_vector_functions

DEFAULT_PORT = 10000
THRIFT_SERVER = "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2"


def check_port_free(host: str, port: int) -> None:
    """A busy port or an address this machine does not have fails here, in one line, before Spark starts."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind((host, port))
    except OSError as exc:
        reason = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
        raise InputError(
            f"port {port} on {host} {reason}: choose another with --port, or stop what uses it"
        ) from None
    finally:
        probe.close()


def thrift_settings(host: str, port: int) -> dict[str, str]:
    return {
        "hive.server2.thrift.bind.host": host,
        "hive.server2.thrift.port": str(port),
        "hive.server2.transport.mode": "binary",
    }


def jdbc_url(host: str, port: int, schema: str) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"jdbc:hive2://{shown}:{port}/{schema.split('.')[-1]}"


def prepare(spark: SparkSession, cfg: Config, schema: str, lake_folders: dict[str, str] | None) -> list[str]:
    """Register the lake's tables (with --lake) and the vector functions; the schema's table names."""
    if is_connect(spark):
        raise SetupError(
            "the SQL endpoint runs Spark's Thrift server inside this process's Spark driver, which a Spark Connect "
            "session does not have: run it without --remote / SPARK_REMOTE (on Databricks, use a SQL warehouse)"
        )
    if resolve_engine(spark, cfg.delta.engine) != "spark":
        refuse_on_delta_rs(f"{schema}.<table>")
    if lake_folders:
        for name, path in sorted(lake_folders.items()):
            if register(spark, f"{schema}.{name}", path):
                log("serve_sql", f"registered {schema}.{name} ({path})")
    elif not spark.catalog.databaseExists(schema):
        raise InputError(
            f"no schema {schema} in the catalog: run the pipeline with --schema {schema}, or give --lake DIR to "
            "register a folder's tables"
        )
    ensure_schema(spark, schema)
    register_vector_functions(spark, schema)
    if schema.split(".")[-1] != "default":
        register_vector_functions(spark, "default")  # sessions whose current schema is default call them bare
    names = [row.tableName for row in spark.sql(f"SHOW TABLES IN {quoted(schema)}").collect()]
    return sorted(names)


def serve(spark: SparkSession, host: str, port: int, schema: str, tables: list[str]) -> int:
    """Start the Thrift server in this driver, say where it is, and block until SIGTERM/SIGINT."""
    for key, value in thrift_settings(host, port).items():
        spark.conf.set(key, value)
    jvm = spark.sparkContext._jvm  # classic only (prepare refused Connect)
    server_class = getattr(jvm, THRIFT_SERVER)
    server = server_class.startWithSparkSession(spark._jsparkSession, False)
    deadline = time.monotonic() + 120
    probe_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    while True:
        try:
            socket.create_connection((probe_host, port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise InputError(
                    f"the Thrift server did not start listening on {host}:{port} within 120 s"
                ) from None
            time.sleep(0.3)
    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    url = jdbc_url(host, port, schema)
    example = "train_embeddings" if "train_embeddings" in tables else (tables[0] if tables else "TABLE")
    print(f"ready: {url}", flush=True)
    print(
        f"tables in {schema}: {', '.join(tables) or '(none yet)'}; try: beeline -u {url} -e "
        f'"SELECT count(*) FROM {schema}.{example}"',
        flush=True,
    )
    log("serve_sql", "serving until SIGTERM or Ctrl-C")
    while not stop.wait(1.0):
        pass
    log("serve_sql", "stopping")
    try:
        server.stop()
        spark.stop()
    except Exception:  # the JVM may be going down with the same signal: nothing is left to stop
        pass
    print("stopped", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser("serve_sql", __doc__.split("\n\n")[0])
    parser.add_argument(
        "--schema",
        default=None,
        help="the schema to serve (default with --lake: lake); catalog.schema on Unity Catalog",
    )
    parser.add_argument(
        "--lake", default=None, help="a folder whose Delta tables are registered under --schema first"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: %(default)s; another host needs authentication in front: see README)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    def job(args: argparse.Namespace, cfg: Config) -> int:
        if not args.schema and not args.lake:
            raise InputError(
                "give --schema NAME (tables registered there) or --lake DIR (a folder of tables)"
            )
        schema = check_schema_name(args.schema or "lake")
        if not 0 < args.port < 65536:
            raise InputError(f"--port {args.port}: a port is 1-65535")
        check_port_free(args.host, args.port)
        lake_folders = lake_tables(args.lake) if args.lake else None  # a bad --lake fails before Spark starts
        if args.lake and not lake_folders:
            raise InputError(f"--lake {args.lake} holds no Delta table (no folder with a _delta_log)")
        want_catalog([schema])
        # Before the session exists: Hive reads these when its first client (the catalog's) starts, and the
        # Thrift server reuses that client's configuration.
        for key, value in thrift_settings(args.host, args.port).items():
            cfg.spark.conf[f"spark.hadoop.{key}"] = value
        spark = get_spark(cfg)
        tables = prepare(spark, cfg, schema, lake_folders)
        return serve(spark, args.host, args.port, schema, tables)

    return run_job(build_parser(), argv, job)


if __name__ == "__main__":
    sys.exit(main())
