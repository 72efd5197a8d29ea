"""Where the project's built-in files are (samples, default model), and users' paths as Spark and local I/O need them."""

from __future__ import annotations

import os
import re
from pathlib import Path

DEFAULT_MODEL = "elmo-tweets-small"


def repo_root() -> Path:
    """$ELMO_LAKE_HOME (set by spark-submit.sh), else this checkout."""
    home = os.environ.get("ELMO_LAKE_HOME")
    return Path(home) if home else Path(__file__).resolve().parents[2]


def default_sample() -> str:
    return str(repo_root() / "samples" / "tweets_labelled.csv")


def default_score_sample() -> str:
    return str(repo_root() / "samples" / "tweets_unlabelled.csv")


def default_model() -> str:
    return str(repo_root() / "models" / DEFAULT_MODEL)


# ----- A user's path, as Spark needs it and as this process's own file I/O needs it -----
# Databricks names one place two ways: dbfs:/x for Spark, /dbfs/x for local file I/O (the FUSE mount). A Unity
# Catalog volume, /Volumes/catalog/schema/volume/..., is the same for both. Object-store URIs (s3://, abfss://,
# gs://, hdfs://) are Spark's; local file I/O cannot open them.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: str) -> bool:
    return bool(_URI.match(str(path))) or str(path).startswith("dbfs:")


def spark_path(path: str) -> str:
    """What Spark reads and writes: ``/dbfs/x`` -> ``dbfs:/x``; relative paths made absolute; URIs as given."""
    path = str(path)
    if path.startswith("/dbfs/"):
        return "dbfs:/" + path[len("/dbfs/") :]
    if is_uri(path) or path.startswith("file:"):
        return path
    return os.path.abspath(path)


def local_path(path: str) -> str:
    """What open() and friends take: ``dbfs:/x`` -> ``/dbfs/x``; ``file:`` URIs -> their path; others as given.

    Raises InputError for object-store URIs: name a local folder, a ``/Volumes/...`` volume or ``dbfs:/`` instead.
    """
    path = str(path)
    if path.startswith("dbfs:"):
        return "/dbfs/" + path[len("dbfs:") :].lstrip("/")
    if path.startswith("file://"):
        return os.path.abspath(path[len("file://") :])
    if path.startswith("file:"):
        return os.path.abspath(path[len("file:") :])
    if is_uri(path):
        from jobs.platform.errors import InputError

        raise InputError(
            f"{path}: this file is written by the job's own process, which cannot open an object-store URI; give a "
            "local folder, a Unity Catalog volume (/Volumes/catalog/schema/volume/...) or a dbfs:/ path"
        )
    return os.path.abspath(path)


def join(root: str, *parts: str) -> str:
    """``root/part/...`` for local paths and URIs alike (never resolves a URI as a local path)."""
    return "/".join([str(root).rstrip("/"), *parts])
