"""Where the project's built-in files are: the samples and the default ELMo model."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL = "elmo-tweets-small"


def repo_root() -> Path:
    """$ELMO_LAKE_HOME (set by spark-submit.sh), else this checkout."""
    home = os.environ.get("ELMO_LAKE_HOME")
    return Path(home) if home else Path(__file__).resolve().parent.parent


def default_sample() -> str:
    return str(repo_root() / "samples" / "tweets_labelled.csv")


def default_score_sample() -> str:
    return str(repo_root() / "samples" / "tweets_unlabelled.csv")


def default_model() -> str:
    return str(repo_root() / "models" / DEFAULT_MODEL)
