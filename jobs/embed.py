"""Embed job: a Delta table of cleaned tokens -> a Delta table of ELMo embeddings, one row per document.

    ./spark-submit.sh jobs/embed.py --input CLEAN_TABLE --output EMBEDDINGS_TABLE --model MODEL [--layer L]
                                    [--pooling P] [--sets L/P,L/P,...] [--rejects TABLE]

MODEL is any model spec (udfs/elmo/model_source.py): a native folder, an unpacked TF Hub module, a file:// URL,
a TF Hub handle (fetched on the driver into $TFHUB_CACHE_DIR), or an hdfs:// / s3a:// / dbfs: path (copied on
the driver); executors get the folder. Hub modules run on TensorFlow (embed.hub_signature picks their signature).

The table's contract (also stored as table and column comments): ``id``; ``embedding`` array<float> (pooled;
null for documents with no tokens, and when pooling is 'none'); ``token_embeddings`` array<array<float>> (one
vector per token, only when pooling is 'none'); ``dim`` (length of each vector); ``layer``; ``pooling``;
``model_id`` (hash of the model's options and weights; the table is partitioned by it, so tables of different
models never mix); ``created_at`` (UTC). Layer 'all' concatenates the layers' vectors; pooling 'mean_max' is the
mean vector then the max vector. A run embeds only the ids that have no row yet for this model, layer and
pooling, so re-running after a crash or on a grown input adds exactly the missing rows; it reads only the clean
rows added since the last run (``jobs/lake/increments.py``). ``--sets`` writes several
(layer, pooling) sets from one pass of the model: each document runs once, for every set it lacks. A document the model fails on is
quarantined in the rejects table (default EMBEDDINGS_TABLE_rejects) with its reason, and retried by the next run
(``jobs/lake/quarantine.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.lake.delta_tables import (
    append_on_snapshot,
    commit_metadata,
    engine_name,
    read_delta,
    retry_once_on_conflict,
    rows_missing_from,
)
from jobs.lake.embedding_sets import embedding_set
from jobs.lake.increments import find_work, increment_note
from jobs.lake.quarantine import Quarantined, quarantine, rejects_table_for, warning_line, with_retry_flag
from jobs.platform.cli import job_parser, log, run_job
from jobs.platform.config import Config
from jobs.platform.errors import ConfigError, InputError, is_missing_path
from jobs.platform.paths import default_model
from jobs.platform.session import (
    default_parallelism,
    get_spark,
    release,
    reuse,
    runs_locally,
    ship_archive,
    ship_code,
)
from udfs.elmo.cpu_features import bf16_warning
from udfs.elmo.hub_runner import hub_model_id
from udfs.elmo.model_source import ModelSource, resolve
from udfs.elmo.options import BilmOptions, ModelFormatError
from udfs.elmo.runtime import model_files, model_id_of, with_precision
from udfs.embed import OUTPUT_SCHEMA, EmbedSpec, make_embed_function
from udfs.row_failures import fault_pattern

EMBEDDINGS_DESCRIPTION = (
    "elmo-lake ELMo embeddings: one row per document and (model_id, layer, pooling). embedding: pooled vector "
    "(array<float> of length dim; null when the document had no tokens); token_embeddings: per-token vectors "
    "when pooling is 'none'; model_id: hash of the ELMo options and weights (partition column)."
)
EMBEDDINGS_COMMENTS = {
    "id": "document id, as in the documents and clean tables",
    "embedding": "pooled ELMo vector, length dim; null when the document had no tokens or pooling is 'none'",
    "token_embeddings": "one ELMo vector per token (pooling 'none' only), each of length dim",
    "dim": "length of each vector (2 x projection_dim; x 3 for layer 'all')",
    "layer": "word_emb, lstm_outputs1, lstm_outputs2, elmo (scalar mix) or all (layers concatenated)",
    "pooling": "mean or max over the document's tokens (padding never counts), mean_max (the mean vector then the "
    "max vector), or none",
    "model_id": "hash of the ELMo model's options and weights; never compare vectors across model_ids",
    "created_at": "when the row was written (UTC)",
}
OUTPUT_COLUMNS = ["id", "embedding", "token_embeddings", "dim", "layer", "pooling", "model_id", "created_at"]


@dataclass
class EmbedSummary:
    output: str
    model_id: str
    embedded: int
    without_tokens: int
    tokens: int
    seconds: float
    version: int | None
    quarantined: Quarantined | None = None


@dataclass(frozen=True)
class ResolvedModel:
    directory: str
    model_id: str
    dim: int
    kind: str = "native"  # or "hub"
    signature: str = "tokens"  # hub modules: the signature the executors call


def resolve_model(
    spec: str,
    signature: str = "tokens",
    spark: SparkSession | None = None,
    backend: str = "tensorflow",
    precision: str = "float32",
) -> ResolvedModel:
    """Any model spec (see ``udfs/elmo/model_source.py``) as a local folder, checked on the driver before any task.

    Hub handles are downloaded here (into $TFHUB_CACHE_DIR), Hadoop paths copied here (one copy kept per model, in
    ``model_cache()``); executors get the folder.
    The model_id names the precision too (``with_precision``): reduced-precision vectors are another set.
    """
    spec = spec or default_model()
    copies: list[str] = []

    def fetch(remote: str) -> str:
        copies.append(copy_from_hadoop(spark, remote))
        return copies[-1]

    try:
        model = _resolve_model(
            spec, resolve(spec, fetch if spark is not None else None), signature, backend, precision
        )
    except BaseException as exc:
        for copy in copies:
            shutil.rmtree(Path(copy).parent, ignore_errors=True)
        if isinstance(exc, ModelFormatError):
            raise InputError(f"--model {spec}: {exc}") from None
        raise
    if copies:  # one kept copy per model: a run that copied the same model again drops its own
        model = dataclasses.replace(model, directory=keep_copy(copies[0], model.model_id))
        log("embed", f"{spec} is {model.model_id}, read from {model.directory}")
    return model


def _resolve_model(
    spec: str, source: ModelSource, signature: str, backend: str, precision: str
) -> ResolvedModel:
    """``resolve_model`` once the spec is a local folder (``source``); a ModelFormatError if it is no model."""
    if source.kind == "hub":
        if backend != "tensorflow":
            raise ConfigError(
                [
                    f"embed.backend is {backend!r}, but {spec} is a TF Hub module, which runs on TensorFlow "
                    "only: set embed.backend=tensorflow, or convert it once with python -m jobs.hub_convert "
                    "and embed with the converted folder"
                ]
            )
        if precision != "float32":
            raise ConfigError(
                [
                    f"embed.precision is {precision!r}, but {spec} is a TF Hub module, which runs its own "
                    "graph in float32: set embed.precision=float32, or convert it once with python -m "
                    "jobs.hub_convert and embed with the converted folder"
                ]
            )
        return ResolvedModel(
            source.path, hub_model_id(source.path, signature), hub_dim(source.path), "hub", signature
        )
    options_path, weights_path = model_files(source.path)
    options = BilmOptions.load(options_path)
    model_id = with_precision(model_id_of(options, weights_path), precision)
    return ResolvedModel(source.path, model_id, options.output_dim)


def hub_dim(folder: str) -> int:
    """Width of a hub module's vectors, from its variables' shapes (no graph is loaded on the driver)."""
    from udfs.elmo.hub_layout import ModuleVariables, infer_options

    variables = ModuleVariables.read(folder)
    options = variables.stored_options() or infer_options(variables.shapes)
    return options.output_dim


COPY_CHUNK_BYTES = (
    8 << 20
)  # model files reach the driver in pieces of this size (a Connect message stays small)


def copy_from_hadoop(spark: SparkSession, spec: str) -> str:
    """Copy a model folder from any file system Spark reads (hdfs://, s3a://, abfss://, dbfs:, ...) to local disk.

    Read through Spark's binaryFile source, in pieces, so classic and Spark Connect sessions copy the same way.
    Spark's file scan skips zero-length files, so those are not copied (no model format needs one).
    """
    from urllib.parse import unquote, urlparse

    chunk = COPY_CHUNK_BYTES
    # removed again unless the copy is whole; keep_copy then keeps it, or the same model's earlier copy
    folder = Path(tempfile.mkdtemp(prefix=".copy-", dir=model_cache()))
    target = folder / (Path(urlparse(spec).path.rstrip("/")).name or "model")
    copied = 0
    try:
        files = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(spec)
        pieces = files.select(
            "path",
            F.posexplode(
                F.expr(
                    f"transform(sequence(0, greatest(cast(ceil(length / {chunk}) as int), 1) - 1), "
                    f"i -> substring(content, i * {chunk} + 1, {chunk}))"
                )
            ).alias("piece", "bytes"),
        ).orderBy("path", "piece")
        root = unquote(urlparse(spec).path).rstrip("/")
        handle, current = None, None
        try:
            for row in pieces.toLocalIterator():
                if row["path"] != current:
                    if handle:
                        handle.close()
                    current = row["path"]
                    relative = unquote(urlparse(current).path)[len(root) :].lstrip("/")
                    destination = target / relative
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    handle = open(destination, "wb")  # noqa: SIM115  (closed when the next file starts)
                    copied += 1
                handle.write(row["bytes"])
        finally:
            if handle:
                handle.close()
    except Exception as exc:
        shutil.rmtree(folder, ignore_errors=True)
        if is_missing_path(exc):
            raise InputError(f"--model {spec} does not exist") from None
        raise InputError(
            f"--model {spec}: cannot copy it from its file system: {str(exc).strip().splitlines()[0]}"
        ) from None
    if not copied:
        shutil.rmtree(folder, ignore_errors=True)
        raise InputError(f"--model {spec} holds no files")
    log("embed", f"copied {spec} ({copied} files)")
    return str(target)


def keep_copy(copy: str, model_id: str) -> str:
    """A model folder ``copy_from_hadoop`` made, kept as ``model_cache()/MODEL_ID``: the first copy of a model is
    renamed there whole, a later run's copy of the same model is removed, so runs leave no copy of their own behind
    (the copy is made each run all the same: that is how a changed model gets a new id)."""
    kept = model_cache() / model_id
    if not kept.is_dir():
        try:
            Path(copy).replace(kept)
        except OSError:
            if not kept.is_dir():  # not another run's copy that won the rename
                raise
    shutil.rmtree(Path(copy).parent, ignore_errors=True)
    return str(kept)


def token_count() -> Column:
    """Tokens of a clean row; a null token list counts as none."""
    return F.coalesce(F.size("tokens"), F.lit(0))


def ship_model(spark: SparkSession, model: ResolvedModel) -> str:
    """Send the model folder to every executor as an archive named by its model_id; returns that name."""
    archive = model_archive(model)
    ship_archive(spark, str(archive))
    return archive.name


def model_archive(model: ResolvedModel) -> Path:
    """The model folder as ``MODEL_ID.zip``, built once per model and user in ``model_cache()`` and reused by
    every later run: a model id is a hash of what the model computes with, so the zip never goes stale, and a run
    leaves nothing new behind (a zip per run would pile up in the driver's temp folder, the model's size each time).
    It is never removed while a run may use it: a classic application's file server hands it to executors that
    join late. Built beside its final name and renamed into place, so a run never ships another's half-written zip.
    """
    archive = model_cache() / f"{model.model_id}.zip"
    if not archive.is_file():
        partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=archive.parent))
        try:
            built = shutil.make_archive(str(partial / model.model_id), "zip", root_dir=model.directory)
            Path(built).replace(archive)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return archive


def model_cache() -> Path:
    """The driver's folder of models, ``$TMPDIR/elmo-lake-models-UID``: the zip shipped to executors of each model
    used on a cluster or over Connect, and one copy of each model read from a remote file system (hdfs://, s3a://,
    dbfs:, ...). Nothing in it is written per run; remove it between runs to reclaim the space."""
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    folder = Path(tempfile.gettempdir()) / f"elmo-lake-models-{user}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def output_dim(model: ResolvedModel, layer: str, pooling: str = "mean") -> int:
    return model.dim * (3 if layer == "all" else 1) * (2 if pooling == "mean_max" else 1)


def check_sets(sets: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (layer, pooling) sets of one run, each once, in the order given; a clear error for an unknown one."""
    from udfs.elmo.runtime import LAYERS, POOLINGS

    unique = list(dict.fromkeys((str(layer), str(pooling)) for layer, pooling in sets))
    bad = [
        f"{layer}/{pooling}" for layer, pooling in unique if layer not in LAYERS or pooling not in POOLINGS
    ]
    if not unique or bad:
        raise ConfigError(
            [
                f"embedding sets {', '.join(bad) or '(none)'}: each needs a layer ({', '.join(LAYERS)}) and a "
                f"pooling ({', '.join(POOLINGS)})"
            ]
        )
    return unique


def embed_partitions(cfg: Config, tokens: int, parallelism: int) -> int:
    """How many partitions the embed stage cuts its input into: ``embed.partitions`` where set, else the default
    parallelism, but no more than one per ``embed.tokens_per_partition`` tokens.

    Each partition runs in a Python worker that imports the backend and loads the model before its first row
    (TensorFlow's import alone is ~4 s of CPU, the original architecture's weights 400 MB): a task slot given a few
    hundred tokens spends far more on that than on embedding them. The sample's 514 tokens so run in one worker,
    not two: a launcher embed of it on the 2-core Xeon, alternating, 36.8 / 37.7 -> 32.3 / 33.8 s of CPU in all,
    21-22 s wall either way. A large input still gets every slot.
    """
    if cfg.embed.partitions:
        return cfg.embed.partitions
    per = cfg.embed.tokens_per_partition
    return parallelism if not per else max(1, min(parallelism, -(-tokens // per)))


def embed_documents(clean: DataFrame, spec: EmbedSpec, model: ResolvedModel, partitions: int) -> DataFrame:
    """clean rows (id, tokens[, retry]) -> embedding rows (OUTPUT_COLUMNS), one per document and set. No I/O.
    A document the model fails on gets no row (``retry``: see ``jobs/quarantine.with_retry_flag``)."""
    created = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    has_tokens = token_count() > 0
    with_tokens = (
        clean.where(has_tokens)
        .select("id", "tokens", *(["retry"] if "retry" in clean.columns else []))
        .repartition(partitions)
        .sortWithinPartitions(F.size("tokens"))  # similar lengths meet in one Arrow batch: less padding
        .mapInArrow(make_embed_function(spec), OUTPUT_SCHEMA)
        .where(F.col("error").isNull())  # a failed document gets no row: the stage quarantines it
        .drop("error")
    )
    sets = clean.sparkSession.createDataFrame(list(spec.sets), "layer string, pooling string")
    without = (
        clean.where(~has_tokens)
        .select("id")
        .crossJoin(sets)
        .select(
            "id",
            "layer",
            "pooling",
            F.lit(None).cast("array<float>").alias("embedding"),
            F.lit(None).cast("array<array<float>>").alias("token_embeddings"),
        )
    )
    dim = F.lit(None).cast("int")
    for layer, pooling in spec.sets:
        is_set = (F.col("layer") == layer) & (F.col("pooling") == pooling)
        dim = F.when(is_set, F.lit(output_dim(model, layer, pooling))).otherwise(dim)
    return (
        with_tokens.unionByName(without)
        .select(
            "id",
            "embedding",
            "token_embeddings",
            dim.alias("dim"),
            "layer",
            "pooling",
            F.lit(model.model_id).alias("model_id"),
            F.lit(created).cast("timestamp").alias("created_at"),
        )
        .select(*OUTPUT_COLUMNS)
    )


def run(
    spark: SparkSession,
    cfg: Config,
    input_table: str,
    output_table: str,
    model_spec: str | None = None,
    layer: str | None = None,
    pooling: str | None = None,
    sets: list[tuple[str, str]] | None = None,
    rejects_table: str | None = None,
) -> EmbedSummary:
    """Embed the documents of ``input_table`` that ``output_table`` lacks, for one (layer, pooling) set (the
    arguments, else the config's) or for several ``sets`` at once: one model pass gives a document every set
    it lacks."""
    engine = cfg.delta.engine
    sets = check_sets(sets or [(layer or cfg.embed.layer, pooling or cfg.embed.pooling)])
    model = resolve_model(
        model_spec or cfg.embed.model, cfg.embed.hub_signature, spark, cfg.embed.backend, cfg.embed.precision
    )
    # the driver's CPU stands for the executors' (a cluster's nodes are alike as a rule); tasks with GPUs: no word
    on_gpu = float(cfg.spark.conf.get("spark.task.resource.gpu.amount", 0) or 0) > 0
    if note := bf16_warning(cfg.embed.precision, "GPU" if on_gpu else "CPU"):
        log("embed", f"WARNING: {note} (embed.precision)")
    clean = read_delta(spark, input_table, engine)
    if "tokens" not in clean.columns or "id" not in clean.columns:
        raise InputError(
            f"{input_table} has no 'id' and 'tokens' columns (columns: {clean.columns}); run jobs/clean.py first"
        )
    return retry_once_on_conflict(
        "embed",
        output_table,
        lambda: _embed_missing(
            spark,
            cfg,
            input_table,
            output_table,
            rejects_table or rejects_table_for(output_table),
            model,
            sets,
        ),
    )


def describe_sets(sets: list[tuple[str, str]]) -> str:
    if len(sets) == 1:
        return "layer {}, pooling {}".format(*sets[0])
    return f"{len(sets)} sets (layer/pooling: {', '.join(f'{layer}/{pooling}' for layer, pooling in sets)})"


def _embed_missing(
    spark: SparkSession,
    cfg: Config,
    input_table: str,
    output_table: str,
    rejects_table: str,
    model: ResolvedModel,
    sets: list[tuple[str, str]],
) -> EmbedSummary:
    """Embed the ids the output lacks at its current version, and commit only on top of that version: of the
    input's rows, those added since the last run (``jobs/lake/increments.py``), else all of them."""
    work = find_work(
        spark,
        cfg,
        "embed",
        input_table,
        output_table,
        stream={"model_id": model.model_id, "sets": describe_sets(sets)},
        rejects_table=rejects_table,
        log=lambda line: log("embed", line),
    )
    clean = work.rows.select("id", "tokens")
    if work.all_new:  # rows the input gained since the last run: none of them can be in the output
        version = work.output_version
        missing_ids = clean
        missing_pairs = (
            None
            if len(sets) == 1
            else clean.select("id").crossJoin(spark.createDataFrame(sets, "layer string, pooling string"))
        )
    elif len(sets) == 1:
        missing_ids, version = rows_missing_from(
            spark, clean, output_table, cfg.delta.engine, ["id"], embedding_set(model.model_id, *sets[0])
        )
        missing_pairs = None  # every row computed is missing
    else:  # the (id, layer, pooling) pairs the table lacks; a document runs once for all of its missing sets
        wanted = clean.select("id").crossJoin(spark.createDataFrame(sets, "layer string, pooling string"))
        missing_pairs, version = rows_missing_from(
            spark,
            wanted,
            output_table,
            cfg.delta.engine,
            ["id", "layer", "pooling"],
            F.col("model_id") == model.model_id,
        )
        missing_ids = clean.join(missing_pairs.select("id").distinct(), "id", "left_semi")
    clean = reuse(missing_ids)  # counted, then embedded: cheap to recompute where it cannot be cached
    counts = clean.select(
        F.count("*").alias("rows"),
        F.sum(token_count()).alias("tokens"),
        F.sum((token_count() == 0).cast("int")).alias("without"),
    ).collect()[0]
    rows, tokens, without = counts["rows"], counts["tokens"] or 0, counts["without"] or 0
    if rows == 0 and version is not None:
        release(clean)
        log(
            "embed",
            f"nothing to embed: every document has a row for {model.model_id} ({describe_sets(sets)})"
            + increment_note(work),
        )
        return EmbedSummary(output_table, model.model_id, 0, 0, 0, 0.0, version)
    # executors elsewhere (a cluster, a Connect server) get their own copy of the model folder, unpacked
    shipped = not runs_locally(spark)
    ship_code(spark)
    spec = EmbedSpec(
        model_dir=ship_model(spark, model) if shipped else model.directory,
        shipped=shipped,
        model_kind=model.kind,
        signature=model.signature,
        model_id=model.model_id,
        sets=tuple(sets),
        token_budget=cfg.embed.token_budget,
        backend=cfg.embed.backend,
        threads=cfg.embed.threads_per_task,
        token_cache_mb=cfg.embed.token_cache_mb,
        precision=cfg.embed.precision,
        max_reject_fraction=cfg.embed.max_reject_fraction,
        fault=fault_pattern("embed"),
    )
    partitions = embed_partitions(cfg, tokens, default_parallelism(spark))
    log(
        "embed",
        f"embedding {rows} documents ({tokens} tokens) with {model.model_id}, {describe_sets(sets)}, "
        f"{partitions} partition{'' if partitions == 1 else 's'}{increment_note(work)}",
    )
    start = time.perf_counter()
    rows_out = embed_documents(
        with_retry_flag(spark, cfg, clean, "embed", rejects_table), spec, model, partitions
    )
    if missing_pairs is not None:  # a document may have had some of the sets already
        rows_out = rows_out.join(missing_pairs, ["id", "layer", "pooling"], "left_semi")
    try:
        result = append_on_snapshot(
            rows_out,
            output_table,
            cfg,
            version,
            ["id", "model_id", "layer", "pooling"],
            EMBEDDINGS_DESCRIPTION,
            partition_by=["model_id"],
            comments=EMBEDDINGS_COMMENTS,
            user_metadata=commit_metadata(
                "embed", model_id=model.model_id, sets=describe_sets(sets), **work.progress
            ),
        )
        took = time.perf_counter() - start
        quarantined = None
        # fewer rows written than documents given (several sets: always looked for): the model failed on some
        if len(sets) > 1 or result.num_records != rows:
            quarantined = quarantine(
                spark,
                cfg,
                "embed",
                still_missing(spark, cfg, clean, missing_pairs, output_table, result.version, model, sets),
                lambda failed: model_failures(failed, spec),
                rejects_table,
                f"{model.model_id} ({describe_sets(sets)})",
            )
    finally:
        release(clean)
    failed = quarantined.documents + quarantined.unexplained if quarantined else 0  # no row for either
    return EmbedSummary(
        output_table,
        model.model_id,
        rows - without - failed,
        without,
        tokens,
        took,
        result.version,
        quarantined,
    )


def still_missing(
    spark: SparkSession,
    cfg: Config,
    clean: DataFrame,
    missing_pairs: DataFrame | None,
    output_table: str,
    version: int | None,
    model: ResolvedModel,
    sets: list[tuple[str, str]],
) -> DataFrame:
    """The clean rows this run was given that still lack a row (for some set) at ``version``: they failed."""
    written = read_delta(spark, output_table, cfg.delta.engine, version)
    if missing_pairs is None:
        present = written.where(embedding_set(model.model_id, *sets[0])).select("id")
        return clean.join(present, "id", "left_anti")
    present = written.where(F.col("model_id") == model.model_id).select("id", "layer", "pooling")
    lacking = missing_pairs.join(present, ["id", "layer", "pooling"], "left_anti")
    return clean.join(lacking.select("id").distinct(), "id", "left_semi")


def model_failures(failed: DataFrame, spec: EmbedSpec) -> DataFrame:
    """(id, reason) of the clean rows ``failed``, run through the model again, one at a time where need be."""
    body = make_embed_function(dataclasses.replace(spec, max_reject_fraction=1.0))
    return (
        failed.where(token_count() > 0)
        .select("id", "tokens")
        .mapInArrow(body, OUTPUT_SCHEMA)
        .select("id", F.col("error").alias("reason"))
        .distinct()
    )


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser("embed", __doc__.split("\n\n")[0])
    parser.add_argument(
        "--input", default="lake/clean", help="Delta table from jobs/clean.py (default: %(default)s)"
    )
    parser.add_argument(
        "--output", default="lake/embeddings", help="Delta table of embeddings (default: %(default)s)"
    )
    parser.add_argument(
        "--model",
        default=None,
        help="ELMo model: a native folder (options.json + one .hdf5), an unpacked TF Hub module folder, a "
        "file:// URL, a TF Hub handle (https://tfhub.dev/google/elmo/3) or an hdfs:// / s3a:// / dbfs: path; "
        "default: embed.model, else the built-in model",
    )
    parser.add_argument(
        "--layer", default=None, help="word_emb, lstm_outputs1, lstm_outputs2, elmo (default), all"
    )
    parser.add_argument(
        "--pooling",
        default=None,
        help="mean (default), max, mean_max (both, concatenated), or none for token-level vectors",
    )
    parser.add_argument(
        "--sets",
        default=None,
        help="several layer/pooling sets from one pass of the model, e.g. elmo/mean,all/max "
        "(instead of --layer/--pooling)",
    )
    parser.add_argument(
        "--rejects",
        default=None,
        help="Delta table of the documents the model failed on (default: OUTPUT_rejects)",
    )
    return parser


def parse_sets(text: str) -> list[tuple[str, str]]:
    """'elmo/mean,all/max' -> [('elmo', 'mean'), ('all', 'max')], checked by check_sets."""
    pairs = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        layer, sep, pooling = item.partition("/")
        if not sep:
            raise ConfigError([f"--sets {text}: {item!r} is not LAYER/POOLING (e.g. elmo/mean)"])
        pairs.append((layer.strip(), pooling.strip()))
    return check_sets(pairs)


def main(argv: Sequence[str] | None = None) -> int:
    def job(args: argparse.Namespace, cfg: Config) -> int:
        overrides = [f"embed.{k}={v}" for k, v in (("layer", args.layer), ("pooling", args.pooling)) if v]
        if overrides and args.sets:
            raise ConfigError(["give either --sets or --layer/--pooling, not both"])
        if overrides:  # validated like any other setting
            from jobs.platform.config import load_config

            cfg = load_config(args.conf, [*args.set, *overrides])
        sets = parse_sets(args.sets) if args.sets else None
        spark = get_spark(cfg)
        summary = run(spark, cfg, args.input, args.output, args.model, sets=sets, rejects_table=args.rejects)
        rate = summary.tokens / summary.seconds if summary.seconds else 0.0
        log(
            "embed",
            f"embedded {summary.embedded} documents ({summary.without_tokens} without tokens: null) in "
            f"{summary.seconds:.1f} s, {rate:,.0f} tokens/s",
        )
        if summary.quarantined and summary.quarantined.documents:
            log("embed", warning_line("embed", summary.quarantined))
        print(f"embeddings: {args.output} (Delta, version {summary.version}, model {summary.model_id})")
        print(f"delta engine: {engine_name(spark, cfg.delta.engine)}")
        return 0

    return run_job(build_parser(), argv, job)


if __name__ == "__main__":
    sys.exit(main())
