"""ELMo on executors: the model is loaded once per Python worker and kept across tasks; rows arrive as Arrow.

``make_embed_function`` returns the ``mapInArrow`` body: (id, tokens) batches in, (id, layer, pooling, embedding,
token_embeddings) batches out, one row per document and (layer, pooling) set asked for: every set of a document
comes from one run of the model. Each Arrow batch goes to the runtime whole, which sorts it by length and cuts
it by the token budget. On a GPU node, each task uses the GPU address Spark assigned to it, and memory is taken
as needed, not all up front.
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class EmbedSpec:
    """What the executors need to build the model and shape the output."""

    model_dir: str  # a local path, or the name of an archive shipped with spark.addArtifacts(archive=True)
    shipped: bool
    sets: tuple[tuple[str, str], ...]  # (layer, pooling) of each output set
    token_budget: int
    backend: str
    threads: int  # 0 = spark.task.cpus
    model_kind: str = "native"  # or "hub": a TF Hub module, run by the hub runner (TensorFlow)
    signature: str = "tokens"  # the hub module's signature
    model_id: str = ""  # as the driver computed it ("" = compute on the worker)
    token_cache_mb: int = -1  # the runtime's token cache (-1 = sized for the machine, 0 = off)
    precision: str = "float32"
    max_reject_fraction: float = 1.0  # a task with a larger share of failed rows fails (udfs/row_failures.py)
    fault: str | None = None  # ELMO_LAKE_FAIL_EMBED, a drill's pattern


OUTPUT_SCHEMA = (
    "id string, layer string, pooling string, embedding array<float>, token_embeddings array<array<float>>, "
    "error string"
)


_MODELS: dict[tuple, object] = {}
_ANNOUNCED: set[str] = set()


def _task_context():
    """The running Spark task's context; None outside a task, or where pyspark is not installed."""
    try:
        from pyspark import TaskContext
    except ImportError:
        return None
    return TaskContext.get()


def task_gpu() -> str | None:
    """The GPU address Spark assigned to the running task, if any."""
    ctx = _task_context()
    resources = ctx.resources() if ctx else {}
    gpu = resources.get("gpu")
    return gpu.addresses[0] if gpu and gpu.addresses else None


@contextmanager
def quiet_cuda_probe(enabled: bool) -> Iterator[None]:
    """Hide what the backend's CUDA probing writes to fd 2 while it starts, on a task without a GPU.

    TensorFlow's CUDA builds print "failed call to cuInit ... UNKNOWN ERROR (303)" and friends straight to the
    process's stderr when a machine has no GPU: noise in every CPU worker's log. A task that was given a GPU keeps
    them (they are the cuDNN/driver hint when something is wrong), and if the start itself fails, what was hidden
    is printed before the error.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@contextmanager
def imports_kept_for_life(worker: bool) -> Iterator[None]:
    """In a Spark Python worker (``worker``), the backend's imports run with Python's cyclic garbage collector
    paused, and what they made is then moved out of its sight for the worker's life (``gc.freeze``).

    TensorFlow and Keras make about 800,000 objects as they import, and the collector, triggered again and again
    as they accumulate, walks them each time: 0.8 of the 4.3 CPU seconds a worker's first model costs here
    (fixture model, 2-core Xeon). The worker keeps them until it exits, so later collections need not walk them
    either. The imports leave a few thousand objects of garbage, which stay (a full collection first would cost
    half a second). Elsewhere (a test or notebook process) nothing changes.
    """
    if not worker or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.freeze()


def _prepare_backend(spec: EmbedSpec, threads: int, gpu: str | None) -> None:
    """Settings that only count before the backend is first imported in this worker."""
    from udfs.elmo.keras_import import unused_by_the_runtime
    from udfs.elmo.runtime import configure_backend
    from udfs.optional_imports import hidden

    # the job's setting, not an inherited KERAS_BACKEND (spark.executorEnv, the node's environment), decides
    try:
        configure_backend(spec.backend)
    except RuntimeError as loaded:
        raise RuntimeError(
            f"embed.backend is {spec.backend!r}, but this Python worker (pid {os.getpid()}) already runs Keras on "
            f"{sys.modules['keras'].backend.backend()!r}, and a process holds one Keras backend for its life. "
            "Spark reuses a worker across the jobs of one application (a notebook's cluster, a Connect server): "
            "run jobs of another backend in a new application (restart the cluster or the server), or keep "
            "embed.backend the same in it"
        ) from loaded
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX: no grabbing all GPU memory
    with quiet_cuda_probe(gpu is None), hidden(*unused_by_the_runtime(spec.backend)):
        if spec.backend == "tensorflow" and "tensorflow" not in sys.modules:
            import tensorflow as tf

            for device in tf.config.list_physical_devices("GPU"):
                tf.config.experimental.set_memory_growth(device, True)
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
        elif spec.backend == "torch":
            import torch

            torch.set_num_threads(threads)
        elif spec.backend == "jax":
            import jax

            jax.devices()  # the backend's own probing happens here


def get_model(spec: EmbedSpec, gpu: str | None):
    """The worker's model for ``spec`` on the task's device: built on first use, then reused by every task.

    Outside a Spark task (``tests/test_gpu.py`` on a GPU machine without Spark) the model runs with every core and
    ``spec.model_dir`` must be a local folder."""
    key = (
        spec.model_dir,
        spec.model_kind,
        spec.signature,
        spec.token_budget,
        spec.backend,
        spec.token_cache_mb,
        spec.precision,
        gpu,
    )
    model = _MODELS.get(key)
    if model is not None:
        return model
    ctx = _task_context()
    threads = spec.threads or (ctx.cpus() if ctx else os.cpu_count() or 1)
    with imports_kept_for_life(ctx is not None):
        _prepare_backend(spec, threads, gpu)
        from udfs.elmo.keras_import import import_keras

        import_keras()  # within the pause: the runtime imports it when it loads the model

        from udfs.elmo.model_source import ModelSource, load_model

    if spec.shipped:
        from pyspark import SparkFiles

        path = SparkFiles.get(spec.model_dir)
    else:
        path = spec.model_dir
    with _device_scope(spec.backend, gpu):
        source = ModelSource(path, spec.model_kind, path)
        model = load_model(
            source,
            spec.token_budget,
            spec.signature,
            model_id=spec.model_id or None,
            token_cache_mb=spec.token_cache_mb,
            precision=spec.precision,
        )
        where = placement(spec.backend, gpu, model.device)
    if where not in _ANNOUNCED:
        _ANNOUNCED.add(where)
        print(
            f"elmo-lake embed: worker {os.getpid()} runs ELMo {model.model_id} ({spec.model_kind}) on {where}, "
            f"backend {model.backend}, {threads} thread(s), {spec.precision}",
            file=sys.stderr,
        )
    _MODELS[key] = model
    return model


def placement(backend: str, gpu: str | None, device: str) -> str:
    """Where a worker's model runs, in words: the GPU address Spark gave its task, and the device it got."""
    if gpu is None:
        return "CPU (no GPU assigned to this task)"
    if device.lower().startswith(("gpu", "cuda")):
        return f"GPU {gpu} ({_device_name(backend, gpu)})"
    # Spark's scheduler assigned an address, but the backend sees no GPU (a discovery script that lists
    # addresses on a machine without one): TensorFlow's soft placement runs the work on the CPU
    return f"GPU {gpu} ({_device_name(backend, gpu)} requested; {backend} sees no GPU, so it runs on the CPU)"


def _device_name(backend: str, gpu: str) -> str:
    return {"tensorflow": f"/GPU:{gpu}", "torch": f"cuda:{gpu}"}.get(backend, f"device {gpu}")


class _device_scope:
    """Pin the work of a block to the task's GPU: its weights when the model loads, its batches when it runs."""

    def __init__(self, backend: str, gpu: str | None):
        self.backend, self.gpu, self.scope = backend, gpu, None

    def __enter__(self):
        if self.gpu is None:
            return self
        if self.backend == "tensorflow":
            import tensorflow as tf

            self.scope = tf.device(f"/GPU:{self.gpu}")
        elif self.backend == "torch":
            import torch

            if torch.cuda.is_available():
                self.scope = torch.cuda.device(int(self.gpu))
        elif self.backend == "jax":
            import jax

            gpus = [d for d in jax.devices() if d.platform == "gpu"]
            if gpus:  # arrays made and jitted calls run in the block go to this device
                self.scope = jax.default_device(gpus[int(self.gpu)])
        if self.scope is not None:
            self.scope.__enter__()
        return self

    def __exit__(self, *exc):
        if self.scope is not None:
            self.scope.__exit__(*exc)
        return False


def vectors_to_arrow(vectors: list[np.ndarray | None], token_level: bool) -> pa.Array:
    """Per-row vectors -> list<float> (or list<list<float>>) without a Python loop over the numbers."""
    if token_level:
        rows = [None if v is None else list(v) for v in vectors]
        return pa.array(rows, type=pa.list_(pa.list_(pa.float32())))
    present = [v.reshape(-1) for v in vectors if v is not None]
    sizes = np.array([0 if v is None else v.size for v in vectors], dtype=np.int32)
    offsets = pa.array(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32))
    values = pa.array(np.concatenate(present) if present else np.zeros(0, np.float32), type=pa.float32())
    mask = pa.array([v is None for v in vectors])
    return pa.ListArray.from_arrays(offsets, values, mask=mask)


def set_columns(vectors: list[np.ndarray | None], layer: str, pooling: str) -> tuple[pa.Array, pa.Array]:
    """One set's vectors as the (embedding, token_embeddings) columns: pooled sets fill the first, 'none' the
    second (layer 'all' as one vector per token, its layers concatenated)."""
    if pooling != "none":
        return vectors_to_arrow(vectors, False), pa.nulls(len(vectors), pa.list_(pa.list_(pa.float32())))
    if layer == "all":  # (layers, tokens, dim) -> (tokens, layers * dim)
        vectors = [None if v is None else v.transpose(1, 0, 2).reshape(v.shape[1], -1) for v in vectors]
    return pa.nulls(len(vectors), pa.list_(pa.float32())), vectors_to_arrow(vectors, True)


def make_embed_function(spec: EmbedSpec):
    """The ``mapInArrow`` body: batches of (id, tokens[, retry]) -> batches of OUTPUT_SCHEMA, one per set. A
    document the model fails on gets, for each set, null vectors and its reason in ``error`` (see
    ``udfs/row_failures.py``); ``retry`` marks documents an earlier run quarantined."""
    from udfs.row_failures import FailureGuard, check_fault, run_rows

    def embed_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        model, rows, n_tokens, before = None, 0, 0, None
        guard = FailureGuard("embed", spec.max_reject_fraction)

        def run_model(sentences):
            for sentence in sentences:
                check_fault(spec.fault, " ".join(sentence), "embed")
            with _device_scope(spec.backend, gpu):
                return model.embed_sets(sentences, spec.sets)

        for batch in batches:
            if batch.num_rows == 0:
                continue
            if model is None:
                gpu = task_gpu()
                model = get_model(spec, gpu)
                before = cache_counts(model)
            tokens = batch.column("tokens").to_pylist()
            rows += batch.num_rows
            n_tokens += sum(len(t) for t in tokens if t)
            sentences = [t or [] for t in tokens]
            per_sentence, reasons = run_rows(sentences, run_model)
            retries = batch.column("retry").to_pylist() if "retry" in batch.schema.names else None
            guard.add(batch.column("id").to_pylist(), reasons, retries)
            error = pa.array(reasons, pa.string())
            for k, (layer, pooling) in enumerate(spec.sets):
                vectors = [
                    None if not s or v is None else v[k] for s, v in zip(sentences, per_sentence, strict=True)
                ]
                embedding, token_embeddings = set_columns(vectors, layer, pooling)
                yield pa.RecordBatch.from_arrays(
                    [
                        batch.column("id"),
                        pa.array([layer] * batch.num_rows, pa.string()),
                        pa.array([pooling] * batch.num_rows, pa.string()),
                        embedding,
                        token_embeddings,
                        error,
                    ],
                    names=["id", "layer", "pooling", "embedding", "token_embeddings", "error"],
                )
        if model is not None:
            print(task_summary(model, gpu, rows, n_tokens, before), file=sys.stderr, flush=True)
        guard.check()

    return embed_batches


def cache_counts(model) -> tuple[int, int]:
    cache = getattr(model, "token_cache", None)
    return (cache.hits, cache.misses) if cache is not None else (0, 0)


def task_summary(model, gpu: str | None, rows: int, tokens: int, before: tuple[int, int]) -> str:
    """The worker's line at the end of a task: where it ran, what it did, how the token cache served it."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    task = f"task {ctx.taskAttemptId()} (partition {ctx.partitionId()})" if ctx else "task"
    device = f"GPU {gpu}" if gpu is not None else "CPU"
    line = f"elmo-lake embed: {task} on {device}, worker {os.getpid()}: {rows} rows, {tokens} tokens"
    cache = getattr(model, "token_cache", None)
    if cache is None or not cache.enabled:
        return line + ", token cache off"
    hits, misses = cache.hits - before[0], cache.misses - before[1]
    rate = hits / (hits + misses) if hits + misses else 0.0
    return (
        line + f", token cache hit rate {rate:.1%} ({len(cache):,} tokens, {cache.nbytes / (1 << 20):.1f} of "
        f"{cache.max_bytes / (1 << 20):.0f} MB)"
    )
