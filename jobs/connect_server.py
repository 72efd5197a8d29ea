"""Start a local Spark Connect server (pyspark ships it): to try the jobs over Connect, and for the tests.

    python -m jobs.connect_server [--port 15002] [--master local[2]] [--dir DIR] [--without-delta]

It listens on 127.0.0.1 only, with conf/local.toml's Spark settings (a server on one machine), and runs in the
foreground until Ctrl-C. Its Python workers use this Python
environment (the pinned dependencies) but not this checkout: the jobs send their code as a Spark Connect
artifact, as they must to a Databricks or any other remote server. It has the Delta Lake connector when ./setup.sh
installed it (the jars, Delta's extension and catalog: the local stand-in for a Databricks serverless session, where
``delta.engine=auto`` chooses the connector); --without-delta starts it without (the delta-rs engine then). Then,
from another shell:

    ./spark-submit.sh --remote sc://127.0.0.1:15002 jobs/pipeline.py
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jobs.platform.errors import ElmoLakeError
from jobs.platform.java import ensure_java

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


def server_command(
    port: int, master: str, settings: dict[str, str] | None = None, delta: bool = True
) -> list[str]:
    from jobs.platform.config import load_config
    from jobs.platform.delta_connector_jars import installed, session_settings, spark_home

    home = spark_home()
    # a server on one machine: conf/local.toml's Spark settings (few shuffle partitions, Delta's state rebuilt in
    # 2 tasks, not 50: the sample's stages over Connect 246 -> 153 s on the 2-core machine; UTC; 4g for the
    # driver, whose JVM holds local mode's executors too), then its own
    conf = dict(load_config("local").spark.conf)
    conf |= {
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        "spark.ui.enabled": "false",
    }
    connector = installed() if delta else None
    if (
        connector is not None
    ):  # Delta has no Spark Connect plugin for Spark 4.2: its SQL and format("delta") serve
        conf.update(session_settings(connector))
    conf.update(settings or {})
    command = [f"{home}/bin/spark-submit", "--class", SERVER_CLASS, "--master", master]
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    return [*command, "spark-internal"]


def server_env() -> dict[str, str]:
    """This environment's Python for the workers, and nothing that would put a checkout on their path."""
    ensure_java()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ELMO_LAKE_HOME", "SPARK_REMOTE")}
    env.update(PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    return env


def wait_for_port(port: int, process: subprocess.Popen, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise ElmoLakeError(f"the Spark Connect server exited with code {process.returncode}: {tail}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    process.kill()
    raise ElmoLakeError(f"the Spark Connect server did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on, for a server about to start (the tests', the benchmarks').

    Drawn below the kernel's ephemeral range (``ephemeral_ports``), where the kernel never puts outgoing
    connections or servers that ask for port 0: a port from inside it, free when drawn, could be taken by any of
    those (a JVM's connections, Spark's own servers, another test) in the seconds before the server binds it, which
    then fails with "Address already in use" (seen once in the suite: the SQL endpoint's Thrift port)."""
    import random

    low, _ = ephemeral_ports()
    draw = random.SystemRandom()
    for _ in range(100):
        port = draw.randrange(max(1024, low - 12000), low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as probe:  # all taken: whatever the kernel gives
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for ephemeral ports: Linux's ip_local_port_range, else IANA's 49152-65535 (macOS)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 49152, 65535


def start_server(
    port: int,
    workdir: Path,
    master: str = "local[2]",
    settings: dict[str, str] | None = None,
    timeout: float = 120,
    delta: bool = True,
) -> subprocess.Popen:
    """A server process listening on 127.0.0.1:port, its log in ``workdir/connect-server.log``."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "connect-server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            server_command(port, master, settings, delta),
            cwd=workdir,
            env=server_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for_port(port, process, timeout, log)
    return process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="connect_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=15002, help="port on 127.0.0.1 (default: %(default)s)")
    parser.add_argument(
        "--master", default="local[2]", help="the server's Spark master (default: %(default)s)"
    )
    parser.add_argument("--dir", default=None, help="working folder of the server (default: a temp folder)")
    parser.add_argument(
        "--without-delta",
        action="store_true",
        help="start without the Delta connector even where it is installed (jobs then use the delta-rs engine)",
    )
    args = parser.parse_args(argv)
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="elmo-lake-connect-"))
    try:
        process = start_server(args.port, workdir, args.master, delta=not args.without_delta)
    except ElmoLakeError as exc:
        print(f"connect_server: error: {exc}", file=sys.stderr)
        return 1
    from jobs.platform.delta_connector_jars import installed

    connector = installed() if not args.without_delta else None
    delta = f"with the Delta connector {connector.version}" if connector else "without the Delta connector"
    print(
        f"Spark Connect server on sc://127.0.0.1:{args.port}, {delta} (log: {workdir}/connect-server.log); "
        "Ctrl-C stops it"
    )
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        process.wait(timeout=30)
        return 0


if __name__ == "__main__":
    sys.exit(main())
