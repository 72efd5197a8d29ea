"""elmo-lake's local metastore: table names that outlive a process, shared by every job and the SQL endpoint.

Its command line is ``python -m jobs.metastore status|start|stop|fetch`` (``jobs/metastore.py``).

Spark keeps table names in a Hive metastore, by default an embedded Derby database that one process at a time
may open: a job would lock the SQL endpoint out, and the other way round. Here the same Derby database runs as
Derby's network server on 127.0.0.1 (``catalog.port``, default 1527), its files in ``catalog.home`` (default
``build/metastore/``), and every session reaches it over JDBC at once. The server is a background Java process
that stays up after the job that started it; ``stop`` stops it, and the next job that needs it starts it again.

Only ``catalog.metastore = "local"`` (conf/local.toml) uses it. On Databricks and on clusters with their own
metastore, names go to the session's catalog ('session').
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from jobs.platform.config import Config, load_config
from jobs.platform.errors import ElmoLakeError, SetupError
from jobs.platform.paths import repo_root

DERBY_VERSION = "10.16.1.1"  # pyspark's own derby jar: the network server and client must be the same release
COORDINATES = f"org.apache.derby:derbynet:{DERBY_VERSION},org.apache.derby:derbyclient:{DERBY_VERSION}"
JARS = (f"derbynet-{DERBY_VERSION}.jar", f"derbyclient-{DERBY_VERSION}.jar")
DATABASE = "elmo_lake_metastore"
SERVER_CLASS = "org.apache.derby.drda.NetworkServerControl"
HOST = "127.0.0.1"


def jars_dir() -> Path:
    return repo_root() / "build" / "metastore-jars"


def client_jar() -> Path | None:
    """The Derby client jar a session's driver needs on its class path, if fetched."""
    path = jars_dir() / JARS[1]
    return path if path.is_file() else None


def home(cfg: Config) -> Path:
    path = Path(cfg.catalog.home)
    return path if path.is_absolute() else repo_root() / path


def jdbc_url(cfg: Config) -> str:
    return f"jdbc:derby://{HOST}:{cfg.catalog.port}/{DATABASE};create=true"


def session_settings(cfg: Config) -> dict[str, str]:
    """The Spark settings of a classic session whose catalog is the local metastore (the Delta connector's
    catalog over Spark's Hive catalog). ``spark.driver.extraClassPath`` must reach the driver when its JVM
    starts: spark-submit.sh gives it (``launch_options``), and so does a session started from plain Python."""
    jar = client_jar()
    if jar is None:
        raise SetupError(
            "table names need the local metastore's Derby client jar, which is not installed: run ./setup.sh "
            "(or python -m jobs.metastore fetch) where Maven Central is reachable"
        )
    return {
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": str(home(cfg) / "warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL": jdbc_url(cfg),
        "spark.hadoop.javax.jdo.option.ConnectionDriverName": "org.apache.derby.jdbc.ClientDriver",
        "spark.hadoop.datanucleus.schema.autoCreateAll": "true",
        "spark.hadoop.hive.metastore.schema.verification": "false",
        "spark.driver.extraClassPath": driver_class_path(cfg),
    }


def driver_class_path(cfg: Config) -> str:
    """The Derby client and the Delta connector's jars, on the driver's own class path: Hive's metastore client
    and the Thrift server's session threads load classes from there, not from --jars."""
    from jobs.platform.delta_connector_jars import installed, wants_connector

    connector = installed() if wants_connector(cfg.delta.engine) else None
    return os.pathsep.join([str(client_jar()), *(connector.jars if connector else ())])


def launch_options(cfg: Config) -> list[str]:
    """spark-submit options for every local job: the client jar on the driver's class path (harmless unless the
    job uses names, and only then can it still be added: the JVM starts before the job reads its arguments)."""
    jar = client_jar()
    if cfg.catalog.metastore != "local" or jar is None:
        return []
    return ["--conf", f"spark.driver.extraClassPath={driver_class_path(cfg)}"]


def is_running(cfg: Config, timeout: float = 2.0) -> bool:
    try:
        socket.create_connection((HOST, cfg.catalog.port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _server_classpath() -> str:
    from jobs.platform.delta_connector_jars import spark_home

    spark_jars = Path(spark_home()) / "jars"
    own = [spark_jars / f"derby{part}-{DERBY_VERSION}.jar" for part in ("", "shared", "tools")]
    return os.pathsep.join(str(p) for p in [*own, jars_dir() / JARS[0]])


def _java() -> str:
    from jobs.platform.java import ensure_java

    ensure_java()
    java_home = os.environ.get("JAVA_HOME")
    return str(Path(java_home) / "bin" / "java") if java_home else (shutil.which("java") or "java")


def ensure_running(cfg: Config, quiet: bool = False, wait_s: float = 60.0) -> bool:
    """Start the server unless something already answers on its port; True if this call started it.

    Concurrent jobs take a lock first, so one starts it and the others wait for it."""
    if is_running(cfg):
        return False
    if not (jars_dir() / JARS[0]).is_file():
        raise SetupError(
            "the local metastore's Derby jars are not installed: run ./setup.sh (or python -m jobs.metastore "
            "fetch) where Maven Central is reachable"
        )
    folder = home(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_running(cfg):
            return False
        log_file = folder / "derby-server.log"
        with open(log_file, "ab") as out:
            subprocess.Popen(
                [
                    _java(),
                    f"-Dderby.system.home={folder}",
                    "-Dderby.drda.startNetworkServer=false",
                    "-cp",
                    _server_classpath(),
                    SERVER_CLASS,
                    "start",
                    "-h",
                    HOST,
                    "-p",
                    str(cfg.catalog.port),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives the job; not killed by the job's Ctrl-C
                cwd=folder,
            )
        deadline = time.monotonic() + wait_s
        while not is_running(cfg, timeout=1.0):
            if time.monotonic() > deadline:
                tail = (
                    log_file.read_text(errors="replace").strip().splitlines()[-1:]
                    if log_file.exists()
                    else []
                )
                raise SetupError(
                    f"the local metastore did not start on {HOST}:{cfg.catalog.port} within {wait_s:g} s"
                    + (f" ({tail[0]})" if tail else "")
                    + f"; see {log_file}, or choose another port with --set catalog.port=N"
                )
            time.sleep(0.3)
    if not quiet:
        print(
            f"elmo-lake: started the local metastore (Derby network server on {HOST}:{cfg.catalog.port}, files in "
            f"{folder}); it stays up for later jobs: python -m jobs.metastore stop",
            file=sys.stderr,
            flush=True,
        )
    return True


def stop(cfg: Config) -> bool:
    """Shut the server down; False if none was running."""
    if not is_running(cfg):
        return False
    subprocess.run(
        [
            _java(),
            "-cp",
            _server_classpath(),
            SERVER_CLASS,
            "shutdown",
            "-h",
            HOST,
            "-p",
            str(cfg.catalog.port),
        ],
        capture_output=True,
        check=False,
    )
    deadline = time.monotonic() + 30
    while is_running(cfg, timeout=0.5) and time.monotonic() < deadline:
        time.sleep(0.3)
    return not is_running(cfg, timeout=0.5)


def fetch() -> Path:
    """Resolve derbynet and derbyclient through Spark's own --packages (as the connector's jars) and keep them."""
    from jobs.platform.delta_connector_jars import (
        ResolutionError,
        install_folder,
        resolve_packages,
        spark_home,
    )
    from jobs.platform.java import ensure_java

    target = jars_dir()
    if all((target / jar).is_file() for jar in JARS):
        return target
    ensure_java()
    try:
        resolved = resolve_packages(spark_home(), COORDINATES, repo_root() / "build" / "ivy")
    except ResolutionError as exc:
        raise SetupError(
            f"could not resolve {COORDINATES} through spark-submit --packages ({exc}): no Maven Central here? "
            "Table names need the local metastore; paths work without it"
        ) from None
    # Ivy names them group_artifact-version.jar: org.apache.derby_derbynet-10.16.1.1.jar -> derbynet-10.16.1.1.jar
    wanted = {jar.name.split("_", 1)[-1]: jar for jar in resolved if jar.name.split("_", 1)[-1] in JARS}
    install_folder(target, wanted, "metastore.json", {"coordinates": COORDINATES, "jars": list(JARS)})
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="metastore", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("status", "start", "stop", "fetch"))
    parser.add_argument("--conf", default=None, help="configuration (default: local)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.conf, args.set)
        where = f"{HOST}:{cfg.catalog.port}"
        if args.action == "fetch":
            print(f"metastore: Derby {DERBY_VERSION} network server and client jars in {fetch()}")
        elif args.action == "start":
            started = ensure_running(cfg, quiet=True)
            print(f"metastore: {'started' if started else 'already running'} on {where} ({jdbc_url(cfg)})")
        elif args.action == "stop":
            print(f"metastore: {'stopped' if stop(cfg) else 'not running'} on {where}")
        else:
            running = is_running(cfg)
            print(f"metastore: {'running' if running else 'not running'} on {where}; files in {home(cfg)}")
            print(
                f"jars: {'installed in ' + str(jars_dir()) if client_jar() else 'not installed (./setup.sh)'}"
            )
            return 0 if running else 3
    except ElmoLakeError as exc:
        print(f"metastore: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
