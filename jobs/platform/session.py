"""The one place a Spark session is built, classic or Spark Connect, and where the two kinds differ.

- classic: spark-submit, ``python -m jobs.JOB`` (local mode), a notebook's cluster session;
- Spark Connect: ``SPARK_REMOTE=sc://HOST:PORT`` (the standard variable), ``spark.remote`` in the config,
  ``./spark-submit.sh --remote sc://HOST:PORT``, or a notebook's Connect session (Databricks serverless, standard
  access mode, Databricks Connect). There is no ``sparkContext``, ``_jvm`` or RDD there, and serverless refuses
  ``cache()``, so jobs never touch those: they ask this module (``default_parallelism``, ``reuse``,
  ``ship_code``, ``ship_archive``, ``runs_locally``).
"""

from __future__ import annotations

import os
import sys
import weakref

from pyspark import SparkConf, SparkContext
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.platform.config import Config
from jobs.platform.errors import ElmoLakeError, SetupError
from jobs.platform.java import ensure_java

# Settings a Connect client may set on its session; the rest (driver/executor sizes, master) are the server's.
_CONNECT_SETTABLE = ("spark.sql.", "spark.databricks.delta.")
_shipped: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # session -> names of what it was given
_parallelism: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_cache_reused: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_catalog_wanted = False  # a job was given table names: its new classic session needs a persistent catalog


def want_catalog(names: list[str]) -> None:
    """A job's table names (``jobs.platform.table_names.names_in``): the session it builds keeps names in the configured
    catalog (``catalog.metastore``). Jobs given only paths never touch a metastore."""
    global _catalog_wanted
    _catalog_wanted = _catalog_wanted or bool(names)


def connect_url(cfg: Config | None = None) -> str | None:
    """The Spark Connect server to use: $SPARK_REMOTE, else the config's spark.remote, else None (classic)."""
    return os.environ.get("SPARK_REMOTE") or (cfg.spark.remote if cfg is not None else None) or None


def is_connect(spark: SparkSession) -> bool:
    """A Spark Connect session (any client: pyspark's, Databricks Connect, a serverless notebook)?"""
    return type(spark).__module__.startswith(("pyspark.sql.connect", "databricks.connect"))


def get_spark(cfg: Config) -> SparkSession:
    """The active session (notebooks, tests) or a new one from ``cfg``; command-line settings win over ``cfg``."""
    active = SparkSession.getActiveSession()
    if active is not None:
        _remember(active, cfg)
        return active
    remote = connect_url(cfg)
    spark = _connect_session(remote, cfg) if remote else _classic_session(cfg)
    _remember(spark, cfg)
    return spark


def _remember(spark: SparkSession, cfg: Config) -> None:
    _cache_reused[spark] = cfg.spark.cache_reused and not is_connect(spark)


def _connect_session(remote: str, cfg: Config) -> SparkSession:
    if not remote.startswith("sc://"):
        raise ElmoLakeError(
            f"spark.remote / SPARK_REMOTE must be a Spark Connect URL (sc://HOST:PORT), got {remote!r}"
        )
    try:
        import grpc  # noqa: F401  (the Connect client's transport; pyspark[connect] installs it)
    except ImportError:
        raise SetupError(
            "Spark Connect needs the client packages: pip install 'pyspark[connect]==4.2.0' (./setup.sh does)"
        ) from None
    _check_reachable(remote)
    try:
        spark = SparkSession.builder.remote(remote).getOrCreate()
        spark.range(1).collect()  # fail here, clearly, if nothing answers at that address
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ElmoLakeError(
            f"cannot reach the Spark Connect server at {remote}: {first}; start one (see README, 'Spark Connect "
            "and Databricks') or check the address"
        ) from None
    skipped = []
    for key, value in cfg.spark.conf.items():
        if not key.startswith(_CONNECT_SETTABLE):
            skipped.append(key)
            continue
        try:
            spark.conf.set(key, value)
        except Exception:  # static on this server (set when it started): the server's value stands
            skipped.append(key)
    if skipped:
        print(
            f"elmo-lake: Spark Connect session at {remote}; the server's own settings apply for: "
            f"{', '.join(sorted(skipped))}",
            file=sys.stderr,
        )
    return spark


def _check_reachable(remote: str, timeout: float = 10.0) -> None:
    """Fail in seconds, not after the client's minutes of retries, when nothing listens at the address."""
    import socket
    from urllib.parse import urlparse

    try:
        address = urlparse(remote.split(";", 1)[0])
        socket.create_connection((address.hostname, address.port or 15002), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        raise ElmoLakeError(
            f"cannot reach the Spark Connect server at {remote}: {exc}; start one (see README, 'Spark Connect "
            "and Databricks') or check the address"
        ) from None


def _classic_session(cfg: Config) -> SparkSession:
    if os.environ.get("PYSPARK_GATEWAY_PORT"):
        # Started by spark-submit: connect to its JVM first so SparkConf sees what spark-submit was given.
        SparkContext._ensure_initialized()
    else:
        # Started as plain Python: the executors' Python is ours unless told otherwise.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        ensure_java()
    conf = SparkConf()
    if cfg.spark.master and not conf.contains("spark.master"):
        conf.setMaster(cfg.spark.master)
    if not conf.contains("spark.app.name"):
        conf.setAppName(cfg.spark.app_name)
    if not conf.contains("spark.ui.showConsoleProgress"):
        conf.set("spark.ui.showConsoleProgress", "true" if sys.stderr.isatty() else "false")
    for key, value in cfg.spark.conf.items():
        if not conf.contains(key):
            conf.set(key, value)
    if not os.environ.get("PYSPARK_GATEWAY_PORT"):
        add_delta_connector(conf, cfg.delta.engine)  # spark-submit.sh gave spark-submit the same (--jars)
    if _catalog_wanted and cfg.catalog.metastore == "local":
        add_local_metastore(conf, cfg)
    spark = SparkSession.builder.config(conf=conf).getOrCreate()
    # classic only: the log level is the driver JVM's, which a Connect client does not own
    spark.sparkContext.setLogLevel(cfg.spark.log_level)
    return spark


def add_delta_connector(conf: SparkConf, engine: str) -> None:
    """The installed Delta connector's jars, extension and catalog (as configure_spark_with_delta_pip sets them),
    unless delta.engine is 'delta-rs' or the settings already name them."""
    from jobs.platform.delta_connector_jars import installed, session_settings, wants_connector

    connector = installed() if wants_connector(engine) else None
    if connector is None:
        return
    for key, value in session_settings(connector).items():
        current = conf.get(key, None)
        if not current:
            conf.set(key, value)
        elif value not in current.split(","):
            conf.set(key, f"{current},{value}")


def add_local_metastore(conf: SparkConf, cfg: Config) -> None:
    """Keep table names in elmo-lake's local metastore (jobs/metastore.py), starting its server if need be."""
    from jobs.platform.local_metastore import ensure_running, session_settings

    settings = session_settings(cfg)
    ensure_running(cfg)
    for key, value in settings.items():
        if key == "spark.driver.extraClassPath" and os.environ.get("PYSPARK_GATEWAY_PORT"):
            continue  # the JVM is running: spark-submit.sh gave it this (jobs/platform/launch_args.py)
        if not conf.contains(key):
            conf.set(key, value)


def default_parallelism(spark: SparkSession) -> int:
    """How many tasks the cluster runs at once by default (what ``spark.range`` splits into)."""
    if spark in _parallelism:
        return _parallelism[spark]
    if not is_connect(spark):
        # classic only: the scheduler knows it; Connect has no SparkContext to ask
        value = spark.sparkContext.defaultParallelism
    else:
        configured = spark.conf.get("spark.default.parallelism", None)
        # spark.range without a partition count splits into the default parallelism: ask the cluster itself
        value = (
            int(configured)
            if configured
            else spark.range(0, 4096).select(F.spark_partition_id().alias("p")).agg(F.max("p")).first()[0] + 1
        )
    _parallelism[spark] = max(1, int(value))
    return _parallelism[spark]


def reuse(df: DataFrame) -> DataFrame:
    """A DataFrame a stage reads more than once: cached on classic Spark, recomputed on Spark Connect.

    Serverless refuses ``cache()``; every reused DataFrame in the stages is cheap to recompute (a table read
    and a join), and the expensive ones (spaCy, ELMo) are read once. ``spark.cache_reused = false`` turns
    caching off on classic Spark too (what the README's figures compare).
    """
    if _caches(df.sparkSession):
        return df.cache()  # classic only (see _remember): Connect and serverless never get here
    return df


def release(df: DataFrame) -> None:
    """Undo ``reuse``: drop the cached blocks, if any."""
    if _caches(df.sparkSession) and df.is_cached:
        df.unpersist()  # classic only, as in reuse


def _caches(spark: SparkSession) -> bool:
    remembered = _cache_reused.get(spark)  # None: a session handed to a stage directly (a notebook's)
    return (not is_connect(spark)) if remembered is None else remembered


def runs_locally(spark: SparkSession) -> bool:
    """Do the executors share this process's disk and Python (classic local mode)? Connect: never assumed."""
    if is_connect(spark):
        return False
    return (spark.conf.get("spark.master", "") or "").startswith("local")


def ship_archive(spark: SparkSession, path: str) -> None:
    """Send a zip to every executor, unpacked under its file name (``SparkFiles.get(name)`` finds it).

    ``addArtifacts`` serves both kinds: on classic Spark 4 it is ``SparkContext.addArchive``; on Connect it
    uploads to the server, which hands the archive to the session's executors.
    """
    name = os.path.basename(path)
    names = _shipped.setdefault(spark, set())
    if name not in names:
        spark.addArtifacts(path, archive=True)
        names.add(name)


def ship_code(spark: SparkSession) -> None:
    """On Spark Connect, give the server's Python workers our code (classic gets it from spark-submit)."""
    if not is_connect(spark):
        return
    from jobs.platform.code_package import code_zip

    path = str(code_zip())
    names = _shipped.setdefault(spark, set())
    if path not in names:
        spark.addArtifacts(path, pyfile=True)
        names.add(path)
