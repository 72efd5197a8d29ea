"""The ELMo runtime: sentences in, vectors out, fast and independent of how sentences are batched.

Sentences are sorted by length and cut into batches by a token budget (rows x padded steps), so padding stays
small and memory stays bounded whatever the input size. Every sentence starts from zero LSTM state, so its
vectors do not depend on its neighbours, the batch size, the order or the padding. ``embed_stateful`` carries
each batch row's state to the next batch, as the reference does; it exists to check conformance.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from udfs.elmo.chars import BOS_CHAR, EOS_CHAR, CharEncoder
from udfs.elmo.options import BilmOptions, ModelFormatError
from udfs.elmo.token_cache import AUTO, TokenCache, cache_megabytes
from udfs.elmo.weights import read_weight_file, to_params

LAYERS = ("word_emb", "lstm_outputs1", "lstm_outputs2", "elmo", "all")
PRECISIONS = ("float32", "bfloat16", "float16")
PRECISION_SUFFIX = {"float32": "", "bfloat16": "-bf16", "float16": "-fp16"}
POOLINGS = ("mean", "max", "mean_max", "none")
DEFAULT_TOKEN_BUDGET = 2048
MIN_FILL = 0.75  # a sentence joins a batch only if it fills at least this share of the batch's steps


def check_sentences(sentences: object) -> list[list[str]]:
    """A list of token lists, or a TypeError that says which item is wrong."""
    if isinstance(sentences, (str, bytes)) or not isinstance(sentences, Sequence):
        raise TypeError(f"sentences must be a list of token lists, got {type(sentences).__name__}")
    checked = []
    for i, sentence in enumerate(sentences):
        if isinstance(sentence, (str, bytes)) or not isinstance(sentence, Sequence):
            raise TypeError(f"sentence {i} must be a list of tokens (str), got {type(sentence).__name__}")
        for j, token in enumerate(sentence):
            if not isinstance(token, str):
                raise TypeError(f"sentence {i}, token {j} must be a str, got {type(token).__name__}")
        checked.append(list(sentence))
    return checked


def plan_batches(lengths: Sequence[int], token_budget: int, max_rows: int | None = None) -> list[list[int]]:
    """Sentence indices grouped longest first, each group's rows x (longest + 2) within the budget.

    A sentence longer than the budget on its own gets a batch of its own; ``max_rows`` caps the rows.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        steps = (lengths[current[0]] if current else lengths[i]) + 2
        full = (len(current) + 1) * steps > token_budget or len(current) == max_rows
        # a sentence much shorter than the batch's longest would be mostly padding: start a new batch
        wasteful = lengths[i] + 2 < MIN_FILL * steps
        if current and (full or wasteful):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class ScalarMix:
    """gamma * sum_k softmax(w)_k * layer_k, optionally layer-normalising each layer per sentence.

    The reference normalises over the whole batch; per sentence keeps a sentence's vector independent of its
    batch. Equal weights and gamma 1 unless given (a TF Hub module's trained values come through the converter).
    """

    def __init__(
        self,
        n_layers: int,
        weights: Sequence[float] | None = None,
        gamma: float = 1.0,
        layer_norm: bool = False,
    ):
        w = np.zeros(n_layers, dtype=np.float64) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (n_layers,):
            raise ValueError(f"scalar mix needs {n_layers} weights, got {len(w)}")
        self.raw_weights = w  # before the softmax, as trained (a hub module's aggregation/weights)
        self.normed = np.exp(w - w.max()) / np.exp(w - w.max()).sum()
        self.gamma, self.layer_norm = float(gamma), layer_norm

    def __call__(self, layers: np.ndarray) -> np.ndarray:
        """(n_layers, n_tokens, dim) -> (n_tokens, dim)."""
        if self.layer_norm and layers.shape[1]:
            mean = layers.mean(axis=(1, 2), keepdims=True)
            var = ((layers - mean) ** 2).mean(axis=(1, 2), keepdims=True)
            layers = (layers - mean) / np.sqrt(var + 1e-12)
        mixed = np.tensordot(self.normed.astype(np.float32), layers, axes=1)
        return (self.gamma * mixed).astype(np.float32)


class BatchedEmbedder:
    """What every runner shares: argument checks, length-sorted batches cut by a token budget, layer and pooling.

    A runner sets ``token_budget``, ``max_rows``, ``n_layers`` and ``dim``, and provides ``_run_rows`` (one batch
    of non-empty sentences -> per sentence its layers (n_layers + 1, n_tokens, dim) and its ``elmo`` vectors, or
    None to have ``_mix`` compute them when asked for).
    """

    token_budget: int
    max_rows: int | None
    n_layers: int
    dim: int

    def embed(
        self, sentences: Sequence[Sequence[str]], layer: str = "all", pooling: str = "none"
    ) -> list[np.ndarray]:
        """Vectors for each sentence, the same whatever else is in the call.

        Returns, per sentence: ``layer='all'`` -> (n_layers + 1, n_tokens, dim); any other layer ->
        (n_tokens, dim); with ``pooling`` 'mean' or 'max' the token axis is pooled (masked: padding never
        counts; an empty sentence pools to zeros); 'mean_max' is the mean vector then the max vector, flat.
        """
        return [vectors[0] for vectors in self.embed_sets(sentences, [(layer, pooling)])]

    def embed_sets(
        self, sentences: Sequence[Sequence[str]], sets: Sequence[tuple[str, str]]
    ) -> list[list[np.ndarray]]:
        """Per sentence, one vector for each (layer, pooling) of ``sets``, from one run of the model.

        Each is what ``embed(sentences, layer, pooling)`` returns for that sentence: several layers and poolings
        of the same text cost one forward pass.
        """
        sentences = check_sentences(sentences)
        for layer, pooling in sets:
            check_choice("layer", layer, LAYERS)
            check_choice("pooling", pooling, POOLINGS)
        results: list[list[np.ndarray] | None] = [None] * len(sentences)
        lengths = [len(s) for s in sentences]
        for batch in plan_batches(lengths, self.token_budget, self.max_rows):
            if lengths[batch[0]] == 0:  # only empty sentences left: nothing to run
                empty = np.zeros((self.n_layers + 1, 0, self.dim), np.float32)
                for i in batch:
                    results[i] = [self._select(empty, layer, pooling, empty[0]) for layer, pooling in sets]
                continue
            rows = self._run_rows([sentences[i] for i in batch])
            for i, (tokens, elmo) in zip(batch, rows, strict=True):
                if elmo is None and any(layer == "elmo" for layer, _ in sets):
                    elmo = self._mix(tokens)  # once for every set that needs it
                results[i] = [self._select(tokens, layer, pooling, elmo) for layer, pooling in sets]
        return results  # type: ignore[return-value]

    def _run_rows(self, sentences: list[list[str]]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        raise NotImplementedError

    def _mix(self, tokens: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _select(
        self, tokens: np.ndarray, layer: str, pooling: str, elmo: np.ndarray | None = None
    ) -> np.ndarray:
        """(n_layers + 1, n_tokens, dim) -> the requested layer, pooled or not."""
        if layer == "all":
            chosen = tokens
        elif layer == "elmo":
            chosen = elmo if elmo is not None else self._mix(tokens)
        else:
            chosen = tokens[LAYERS.index(layer)]
        return pool(chosen, pooling)


class Elmo(BatchedEmbedder):
    """A loaded biLM and its compiled forward pass on the current Keras backend.

    Parameters
    ----------
    options : the model's hyper-parameters.
    arrays : the reference datasets (``weights.read_weight_file``).
    token_budget : most (rows x padded steps) per batch; bounds memory.
    scalar_mix : the ``elmo`` layer's mix (equal weights by default).
    model_id : a content hash naming the model in output tables.
    """

    def __init__(
        self,
        options: BilmOptions,
        arrays: dict[str, np.ndarray],
        token_budget: int = DEFAULT_TOKEN_BUDGET,
        scalar_mix: ScalarMix | None = None,
        model_id: str = "elmo-unnamed",
        max_rows: int | None = None,
        token_cache_mb: float | None = AUTO,
        precision: str = "float32",
    ):
        from udfs.elmo.keras_import import import_keras

        keras = import_keras()
        check_choice("precision", precision, PRECISIONS)
        self.options = options
        self.precision = precision
        self.backend = keras.backend.backend()
        exact_float32_products(self.backend)
        self.token_budget = int(token_budget)
        self.max_rows = max_rows
        if self.token_budget < 3:
            raise ValueError("token_budget must be at least 3 (one token between <S> and </S>)")
        self.scalar_mix = scalar_mix or ScalarMix(options.n_layers + 1)
        self.model_id = model_id  # with_precision(...) of the stored model's id (load_elmo does that)
        self.encoder = CharEncoder(options.max_characters_per_token)
        params = to_params(arrays, options)
        self._params = {}
        for name in list(params):  # one at a time, so at most one extra copy of the weights is alive
            value = params.pop(name)
            dtype = "int32" if value.dtype.kind in "iu" else precision
            self._params[name] = keras.ops.cast(keras.ops.convert_to_tensor(value), dtype)
        del params
        self._forward = _compile_forward(self.backend, self._params, options, exact_state=True)
        self._forward_fast = _compile_forward(self.backend, self._params, options, exact_state=False)
        self._token_layer = _compile_token_layer(self.backend, self._params, options)
        self._lstm_fast = _compile_from_embedding(self.backend, self._params, options)
        self.token_cache = TokenCache(options.projection_dim, cache_megabytes(token_cache_mb) * (1 << 20))
        self._specials = self._token_vectors_of(
            np.stack([self.encoder.special(BOS_CHAR), self.encoder.special(EOS_CHAR)])
        )  # <S>, </S>: the same in every sentence

    @property
    def dim(self) -> int:
        return self.options.output_dim

    @property
    def n_layers(self) -> int:
        return self.options.n_layers

    @property
    def device(self) -> str:
        return _device_of(self.backend)

    def compile_on_weights(self, fn, signature: list, rows: tuple, steps: tuple, out_rows, out_steps):
        """``fn(params, *arrays)`` compiled on this model's backend over its weights (in its precision), as the
        runtime compiles its own passes (see ``_compile``): for measuring parts of the model (``udfs.elmo
        bench``)."""
        return _compile(self.backend, fn, self._params, signature, rows, steps, out_rows, out_steps)

    # -- the raw model ---------------------------------------------------------------------------------------
    def run_batch(
        self,
        sentences: list[list[str]],
        state: tuple[np.ndarray, np.ndarray] | None = None,
        final_state: bool = True,
    ):
        """One batch as given (no sorting): layers (n_layers + 1, B, T, 2P), lengths, final (c, m) states.

        ``state`` is the initial (c, m), zeros if None. With ``final_state=False`` the batch runs faster, and
        the returned states and the padded steps' outputs are meaningless.
        """
        ids, lengths = self.encoder.batch(sentences)
        rows = ids.shape[0]
        opts = self.options
        if state is None:
            c0 = np.zeros((opts.n_layers, 2, rows, opts.lstm_dim), dtype=np.float32)
            m0 = np.zeros((opts.n_layers, 2, rows, opts.state_dim), dtype=np.float32)
        else:
            c0, m0 = state
        forward = self._forward if final_state else self._forward_fast
        layers, c, m = forward(ids, lengths, c0, m0)
        return np.swapaxes(layers, 1, 2), lengths, (c, m)

    def _run_rows(self, sentences: list[list[str]]) -> list[tuple[np.ndarray, None]]:
        if self.token_cache.enabled:
            layers = self._run_cached(sentences)
        else:
            layers, _, _ = self.run_batch(sentences, final_state=False)
        return [(layers[:, row, 1 : 1 + len(s), :], None) for row, s in enumerate(sentences)]

    def _run_cached(self, sentences: list[list[str]]) -> np.ndarray:
        """Layers (n_layers + 1, B, T, 2P) of one batch, the token layer taken from the token cache."""
        occurrences = [token for sentence in sentences for token in sentence]
        distinct, rows = self.token_cache.vectors_for(occurrences, self._compute_tokens)
        # rows of the gather table: the batch's distinct tokens, then <S>, </S> and a zero vector for padding
        table = np.concatenate([distinct, self._specials, np.zeros((1, distinct.shape[1]), np.float32)])
        bos, eos, pad = len(distinct), len(distinct) + 1, len(distinct) + 2
        lengths = np.array([len(s) + 2 for s in sentences], np.int32)
        index = np.full((len(sentences), int(lengths.max())), pad, np.int64)
        index[:, 0] = bos
        start = 0
        for row, sentence in enumerate(sentences):
            n = len(sentence)
            index[row, 1 : n + 1] = rows[start : start + n]
            index[row, n + 1] = eos
            start += n
        layers = self._lstm_fast(
            table[index], lengths
        )  # padding trails the real steps: its value never counts
        return np.swapaxes(layers, 1, 2)

    def _compute_tokens(self, tokens: list[str]) -> np.ndarray:
        """The token layer of tokens the cache lacks (``_token_vectors_of`` runs it in chunks)."""
        ids = np.stack([self.encoder.token(t) for t in tokens])
        return self._token_vectors_of(ids)

    def _token_vectors_of(self, ids: np.ndarray) -> np.ndarray:
        """(N, max_chars) char ids -> (N, P) float32 token vectors, in chunks of at most ``token_budget`` tokens."""
        chunks = [
            self._token_layer(ids[i : i + self.token_budget]) for i in range(0, len(ids), self.token_budget)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.options.projection_dim), np.float32)

    def embed_stateful(
        self, batches: Sequence[Sequence[Sequence[str]]], layer: str = "all"
    ) -> list[list[np.ndarray]]:
        """The reference's way: batches in order, each row's LSTM state carried to the same row of the next."""
        check_choice("layer", layer, LAYERS)
        state = None
        out = []
        width = max((len(b) for b in batches), default=0)
        opts = self.options
        for batch in batches:
            batch = check_sentences(batch)
            c_all = (
                np.zeros((opts.n_layers, 2, width, opts.lstm_dim), np.float32) if state is None else state[0]
            )
            m_all = (
                np.zeros((opts.n_layers, 2, width, opts.state_dim), np.float32) if state is None else state[1]
            )
            rows = len(batch)
            layers, lengths, (c, m) = self.run_batch(batch, (c_all[:, :, :rows], m_all[:, :, :rows]))
            c_all, m_all = c_all.copy(), m_all.copy()
            c_all[:, :, :rows], m_all[:, :, :rows] = c, m
            state = (c_all, m_all)
            out.append(
                [self._select(layers[:, r, 1 : lengths[r] - 1, :], layer, "none") for r in range(rows)]
            )
        return out

    def _mix(self, tokens: np.ndarray) -> np.ndarray:
        return self.scalar_mix(tokens)


def pool(chosen: np.ndarray, pooling: str) -> np.ndarray:
    """Pool the token axis (the second to last) by 'mean' or 'max', or keep it ('none'); no tokens -> zeros.

    'mean_max' is the mean-pooled vector followed by the max-pooled one, flattened (layer 'all': the three
    layers' means, then their maxima), as one vector twice as long.
    """
    if pooling == "none":
        return np.ascontiguousarray(chosen, dtype=np.float32)
    if pooling == "mean_max":
        return np.concatenate([pool(chosen, "mean").reshape(-1), pool(chosen, "max").reshape(-1)])
    axis = chosen.ndim - 2
    if chosen.shape[axis] == 0:
        return np.zeros(chosen.shape[:axis] + chosen.shape[axis + 1 :], dtype=np.float32)
    pooled = chosen.mean(axis=axis) if pooling == "mean" else chosen.max(axis=axis)
    return pooled.astype(np.float32)


def with_precision(model_id: str, precision: str) -> str:
    """The model_id of vectors computed in ``precision``: reduced precision gives other vectors, so another id,
    and tables never mix them with float32 ones (``elmo-…`` stays the float32 id)."""
    check_choice("precision", precision, PRECISIONS)
    return model_id + PRECISION_SUFFIX[precision]


def check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} {value!r} is not one of {', '.join(allowed)}")


def exact_float32_products(backend: str) -> None:
    """Float32 products and convolutions in float32 on a GPU, not TF32.

    On NVIDIA GPUs since Ampere, TensorFlow (``tensor_float_32_execution``), PyTorch's cuDNN convolutions
    (``cudnn.conv.fp32_precision``) and JAX/XLA (``default_matmul_precision``) may round float32 inputs to TF32's
    10-bit mantissa by default, beyond the runtime's promises (1e-5 of the reference, 1e-6 across batches): on an
    H200 with PyTorch, the reference fixture came out 4.5e-4 from the reference with TF32, 7.2e-7 without. The
    runtime turns that off for the process; reduced precision is ``precision``'s job (bfloat16 products are
    untouched by these settings). JAX's setting is applied where the runtime compiles (see ``_compile``), so other
    JAX code in the process keeps its own. No effect on a CPU.
    """
    if backend == "torch":
        import torch

        if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # PyTorch >= 2.9
            torch.backends.cuda.matmul.fp32_precision = "ieee"
            torch.backends.cudnn.conv.fp32_precision = "ieee"
        else:
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
    elif backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)


def jax_matmul_precision(params: dict) -> str:
    """The XLA precision of a model's products on JAX: "highest" (float32, not TF32) for float32 weights, the
    default for reduced-precision ones (their products are already bfloat16 or float16)."""
    from keras.backend import standardize_dtype

    reduced = any(standardize_dtype(v.dtype) in ("bfloat16", "float16") for v in params.values())
    return "default" if reduced else "highest"


JAX_CACHE_MAX_BYTES = 1 << 30  # the default compilation cache's bound, where filelock lets JAX evict safely


@functools.cache  # once per process
def use_jax_compilation_cache() -> None:
    """On JAX, keep what XLA compiles in JAX's persistent compilation cache, so each shape bucket of a model is
    compiled once per machine: by the first Python worker (or process) that meets it, not again in every worker,
    every new model instance and every later job.

    The cache folder is ``JAX_COMPILATION_CACHE_DIR`` where set (then JAX's own thresholds apply too; set empty,
    no cache), else ``elmo-lake-jax-cache-UID`` in the temp folder, keeping every compiled program (JAX's default
    keeps only those that took a second or more), at most 1 GiB where the ``filelock`` package lets JAX evict. A
    program read from the cache is the one XLA compiled for the same computation, precision and device, so the
    vectors do not change.
    """
    import importlib.util
    import tempfile

    import jax

    if jax.config.jax_compilation_cache_dir or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return  # the user's own cache, or none where they set the variable empty
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    jax.config.update(
        "jax_compilation_cache_dir", str(Path(tempfile.gettempdir()) / f"elmo-lake-jax-cache-{uid}")
    )
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    # a bounded cache: JAX locks the folder with filelock to evict, and refuses a bound without it
    if "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ and importlib.util.find_spec("filelock"):
        jax.config.update("jax_compilation_cache_max_size", JAX_CACHE_MAX_BYTES)
    from jax.experimental.compilation_cache import compilation_cache

    compilation_cache.reset_cache()  # JAX set the cache up, without a folder, at its first operation: again


def _device_of(backend: str) -> str:
    if backend == "jax":
        import jax

        return str(jax.config.jax_default_device or jax.devices()[0])  # under jax.default_device: that one
    if backend == "torch":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    import tensorflow as tf

    return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"


def _compile_forward(backend: str, params: dict, opts: BilmOptions, exact_state: bool):
    """The whole biLM, compiled: (char ids, lengths, c0, m0) -> float32 (layers, c, m) as numpy."""
    from udfs.elmo.bilm import bilm_forward

    def forward(p, ids, lengths, c0, m0):
        return _as_float32(bilm_forward(p, opts, ids, lengths, c0, m0, exact_state))

    state = [opts.n_layers, 2, None]
    signature = [
        ("int32", [None, None, opts.max_characters_per_token]),
        ("int32", [None]),
        ("float32", [*state, opts.lstm_dim]),
        ("float32", [*state, opts.state_dim]),
    ]
    # JAX: pad to shape buckets (rows to a power of two, steps to a multiple of 8) so XLA compiles a handful of
    # shapes; rows are axis 0 of ids and lengths and axis 2 of the states, steps axis 1 of ids
    return _compile(
        backend,
        forward,
        params,
        signature,
        rows=(0, 0, 2, 2),
        steps=(1, None, None, None),
        out_rows=(2, 2, 2),
        out_steps=(1, None, None),
    )


def _compile_token_layer(backend: str, params: dict, opts: BilmOptions):
    """The token layer alone, compiled: (N, max_chars) char ids -> (N, P) float32 numpy."""
    from udfs.elmo.bilm import token_vectors

    def layer(p, ids):
        return _as_float32((token_vectors(p, opts, ids),))

    signature = [("int32", [None, opts.max_characters_per_token])]
    run = _compile(
        backend, layer, params, signature, rows=(0,), steps=(None,), out_rows=(0,), out_steps=(None,)
    )
    return lambda ids: run(ids)[0]


def _compile_from_embedding(backend: str, params: dict, opts: BilmOptions):
    """The biLM above the token layer, stateless and compiled: (embedding (B, T, P), lengths) -> float32 layers."""
    from keras import ops

    from udfs.elmo.bilm import bilm_from_embedding

    def forward(p, embedding, lengths):
        rows = ops.shape(embedding)[0]
        c0 = ops.zeros((opts.n_layers, 2, rows, opts.lstm_dim))
        m0 = ops.zeros((opts.n_layers, 2, rows, opts.state_dim))
        layers, _, _ = bilm_from_embedding(p, opts, embedding, lengths, c0, m0, exact_state=False)
        return _as_float32((layers,))

    signature = [("float32", [None, None, opts.projection_dim]), ("int32", [None])]
    run = _compile(
        backend, forward, params, signature, rows=(0, 0), steps=(1, None), out_rows=(2,), out_steps=(1,)
    )
    return lambda embedding, lengths: run(embedding, lengths)[0]


def _as_float32(outputs: tuple) -> tuple:
    from keras import ops

    return tuple(ops.cast(t, "float32") for t in outputs)


def _compile(backend: str, fn, params: dict, signature: list, rows: tuple, steps: tuple, out_rows, out_steps):
    """``fn(params, *arrays)`` compiled on the backend, called with numpy arrays, returning a tuple of numpy arrays.

    ``signature``: (dtype, shape) per argument, None for axes that vary (TensorFlow traces once for all shapes).
    ``rows``/``steps``: per argument, its batch / time axis or None, and ``out_rows``/``out_steps`` per output: JAX
    pads these axes to buckets so it compiles a few shapes, not one per batch, and cuts the outputs back.
    """
    from keras import ops

    if backend == "tensorflow":
        import tensorflow as tf

        spec = [tf.TensorSpec(shape, getattr(tf, dtype)) for dtype, shape in signature]

        # autograph=False: the passes hold no Python control flow over tensors (``bilm.scan`` builds its own
        # while_loop), so converting them is wasted work (~0.8 s of the first embed in each process) and leaves
        # __autograph_generated_file*.py in the temp folder of every Spark worker that is killed, not exited
        @tf.function(input_signature=spec, autograph=False)
        def compiled(*args):
            return fn(params, *args)

        return lambda *args: tuple(t.numpy() for t in compiled(*args))

    if backend == "jax":
        import jax

        use_jax_compilation_cache()
        compiled_jax = jax.jit(fn)
        precision = jax_matmul_precision(params)

        def run_jax(*args):
            n_rows = next(a.shape[ax] for a, ax in zip(args, rows, strict=True) if ax is not None)
            step_sizes = [a.shape[ax] for a, ax in zip(args, steps, strict=True) if ax is not None]
            n_steps = step_sizes[0] if step_sizes else None
            rows_b = _bucket(n_rows)
            steps_b = -(-n_steps // 8) * 8 if n_steps is not None else None
            padded = []
            for a, r_ax, s_ax in zip(args, rows, steps, strict=True):
                pad = [(0, 0)] * a.ndim
                if r_ax is not None:
                    pad[r_ax] = (0, rows_b - n_rows)
                if s_ax is not None:
                    pad[s_ax] = (0, steps_b - n_steps)
                padded.append(np.pad(a, pad))
            with jax.default_matmul_precision(precision):
                out = compiled_jax(params, *padded)
            cut = []
            for t, r_ax, s_ax in zip(out, out_rows, out_steps, strict=True):
                t = np.asarray(t)
                index = [slice(None)] * t.ndim
                if r_ax is not None:
                    index[r_ax] = slice(0, n_rows)
                if s_ax is not None:
                    index[s_ax] = slice(0, n_steps)
                cut.append(t[tuple(index)])
            return tuple(cut)

        return run_jax

    import torch

    def run_torch(*args):
        with torch.no_grad():
            out = fn(params, *(ops.convert_to_tensor(a) for a in args))
        return tuple(ops.convert_to_numpy(t) for t in out)

    return run_torch


def _bucket(n: int) -> int:
    size = 1
    while size < n:
        size *= 2
    return size


def model_files(
    model: str | Path, options: str | Path | None = None, weights: str | Path | None = None
) -> tuple[Path, Path]:
    """(options.json, weights.hdf5) of a model directory, or the files given explicitly."""
    if options and weights:
        return Path(options), Path(weights)
    folder = Path(model)
    if not folder.is_dir():
        raise ModelFormatError(
            f"model directory {folder} does not exist (it holds options.json and one .hdf5 file)"
        )
    options_path = Path(options) if options else folder / "options.json"
    if weights:
        return options_path, Path(weights)
    candidates = sorted(p for p in folder.glob("*.hdf5") if not p.name.startswith("lm_embeddings"))
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise ModelFormatError(
            f"model directory {folder} must hold exactly one weights .hdf5 file (found: {found})"
        )
    return options_path, candidates[0]


def model_id_of(options: BilmOptions, weights_path: str | Path) -> str:
    """A hash of the options, the weights and, when there is one, the trained scalar mix beside them."""
    digest = hashlib.sha256(json.dumps(options.to_json(), sort_keys=True).encode())
    hash_file(digest, weights_path)
    mix = Path(weights_path).parent / "scalar_mix.json"
    if mix.is_file():
        hash_file(digest, mix)
    return "elmo-" + digest.hexdigest()[:16]


def hash_file(digest, path: str | Path) -> None:
    with open(path, "rb") as fin:
        for block in iter(lambda: fin.read(1 << 20), b""):
            digest.update(block)


@dataclass
class StoredModel:
    """A native model as read from disk, before the runtime compiles it."""

    options: BilmOptions
    arrays: dict[str, np.ndarray]
    scalar_mix: ScalarMix
    model_id: str


def read_model(
    model: str | Path,
    options: str | Path | None = None,
    weights: str | Path | None = None,
    model_id: str | None = None,
) -> StoredModel:
    """Options, checked weights and scalar mix of a native model; ``model_id`` skips hashing the weights."""
    options_path, weights_path = model_files(model, options, weights)
    opts = BilmOptions.load(options_path)
    arrays = read_weight_file(weights_path, opts)
    mix = stored_scalar_mix(Path(options_path).parent, opts) or ScalarMix(opts.n_layers + 1)
    return StoredModel(opts, arrays, mix, model_id or model_id_of(opts, weights_path))


def load_elmo(
    model: str | Path,
    options: str | Path | None = None,
    weights: str | Path | None = None,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    model_id: str | None = None,
    token_cache_mb: float | None = AUTO,
    precision: str = "float32",
) -> Elmo:
    """Load a native model: a directory with ``options.json`` and one ``.hdf5`` (or the two files given).

    ``model_id``: the id as the caller already computed it (precision included), so the weights are not hashed
    again; ``token_cache_mb``: the token cache's size (-1 = sized for the machine, 0 = off); ``precision``:
    float32 (exact), bfloat16 or float16.
    """
    stored = read_model(model, options, weights, model_id)
    return Elmo(
        stored.options,
        stored.arrays,
        token_budget=token_budget,
        scalar_mix=stored.scalar_mix,
        model_id=model_id or with_precision(stored.model_id, precision),
        token_cache_mb=token_cache_mb,
        precision=precision,
    )


def stored_scalar_mix(folder: Path, opts: BilmOptions) -> ScalarMix | None:
    """A trained scalar mix saved beside the model (``scalar_mix.json``: weights, gamma), e.g. by the converter."""
    path = folder / "scalar_mix.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return ScalarMix(
        opts.n_layers + 1, data.get("weights"), data.get("gamma", 1.0), data.get("layer_norm", False)
    )


def configure_backend(name: str | None) -> None:
    """Choose the Keras backend before keras is first imported (tensorflow, jax or torch)."""
    if not name:
        return
    import sys

    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != name:
        raise RuntimeError(
            f"keras is already loaded with backend {sys.modules['keras'].backend.backend()!r}; "
            f"set KERAS_BACKEND={name} before starting Python"
        )
    os.environ["KERAS_BACKEND"] = name
