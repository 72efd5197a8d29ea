"""The biLM's forward pass, piece by piece, in Keras 3 ops (TensorFlow, JAX or PyTorch underneath).

Each piece is a pure function of its parameters (a dict of backend tensors, see ``weights.py``) and its inputs,
so one compiled function serves every batch of a shape and nothing is carried between calls unless the caller
passes the LSTM state in. Shapes are noted as (batch B, time steps T incl. <S> and </S>, chars C, ...).
"""

from __future__ import annotations

from udfs.elmo.keras_import import import_keras
from udfs.elmo.options import BilmOptions

keras = import_keras()
ops = keras.ops
standardize_dtype = keras.backend.standardize_dtype

CNN_FILTER_SLICE = 256
FORGET_BIAS = 1.0


def char_cnn(params: dict, opts: BilmOptions, char_ids):
    """(B, T, C) char ids -> (B * T, n_filters): embedding, one convolution per width, max over positions."""
    n_chars = opts.max_characters_per_token
    flat = ops.reshape(char_ids, (-1, n_chars))
    x = ops.take(params["char_embed"], flat, axis=0)  # (N, C, D)
    pieces = []
    for i, (width, _) in enumerate(opts.filters):
        positions = n_chars - width + 1
        # im2col: the width consecutive char vectors side by side, so each convolution is one matrix product
        cols = (
            x if width == 1 else ops.concatenate([x[:, k : k + positions, :] for k in range(width)], axis=-1)
        )
        kernel, bias = params[f"cnn_kernel_{i}"], params[f"cnn_bias_{i}"]
        # Wide filter banks in slices, so the (N, positions, filters) products stay small.
        for begin in range(0, kernel.shape[1], CNN_FILTER_SLICE):
            conv = ops.matmul(cols, kernel[:, begin : begin + CNN_FILTER_SLICE])  # (N, positions, <=slice)
            pieces.append(
                ops.max(conv, axis=1) + bias[begin : begin + CNN_FILTER_SLICE]
            )  # max(x+b) == max(x)+b
    features = ops.concatenate(pieces, axis=-1)  # (N, n_filters)
    return ops.relu(features) if opts.activation == "relu" else ops.tanh(features)


def highway(params: dict, opts: BilmOptions, h):
    """(N, F) -> (N, F): gate = sigmoid(carry), out = gate * relu(transform) + (1 - gate) * h."""
    n_filters = opts.n_filters
    for i in range(opts.n_highway):
        z = ops.matmul(h, params[f"highway_kernel_{i}"]) + params[f"highway_bias_{i}"]  # (N, 2F)
        gate = ops.sigmoid(z[:, :n_filters])
        h = gate * ops.relu(z[:, n_filters:]) + (1.0 - gate) * h
    return h


def token_vectors(params: dict, opts: BilmOptions, char_ids):
    """(..., C) -> (N, P), N the product of the leading axes: char CNN, highway layers, projection."""
    h = highway(params, opts, char_cnn(params, opts, char_ids))
    if "proj_kernel" in params:
        h = ops.matmul(h, params["proj_kernel"]) + params["proj_bias"]
    return h


def token_embedding(params: dict, opts: BilmOptions, char_ids):
    """(B, T, C) -> (B, T, P): char CNN, highway layers, projection to the LSTM's input size."""
    shape = ops.shape(char_ids)
    return ops.reshape(token_vectors(params, opts, char_ids), (shape[0], shape[1], opts.projection_dim))


def reverse_sequence(x, lengths):
    """Reverse each sequence's first ``lengths[b]`` steps along axis 0 of time-major ``x`` (T, B, ...)."""
    shape = ops.shape(x)
    steps = ops.expand_dims(ops.arange(shape[0], dtype="int32"), 1)  # (T, 1)
    length = ops.expand_dims(ops.cast(lengths, "int32"), 0)  # (1, B)
    index = ops.where(steps < length, length - 1 - steps, steps)  # (T, B)
    index = ops.broadcast_to(ops.reshape(index, (shape[0], shape[1]) + (1,) * (len(shape) - 2)), shape)
    return ops.take_along_axis(x, index, axis=0)


def scan(step, init, xs, out_dtype=None):
    """``carry, ys = scan(step, init, xs)`` over axis 0 of ``xs``; ``ys`` is a tuple of per-step outputs, of
    ``out_dtype`` (default: the first carry's dtype).

    (``keras.ops.scan`` on TensorFlow insists that each step's output has the carry's shape.)
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.lax.scan(step, init, xs)
    if backend == "tensorflow":
        import tensorflow as tf

        n = tf.shape(xs[0])[0]
        outputs = tuple(tf.TensorArray(out_dtype or init[0].dtype, size=n) for _ in range(2))

        def body(i, carry, outputs):
            # index the inputs in place: a TensorArray.unstack would first copy all of them
            carry, ys = step(carry, tuple(x[i] for x in xs))
            return i + 1, carry, tuple(o.write(i, y) for o, y in zip(outputs, ys, strict=True))

        _, carry, outputs = tf.while_loop(lambda i, *_: i < n, body, (tf.constant(0), tuple(init), outputs))
        return carry, tuple(o.stack() for o in outputs)
    carry, ys = tuple(init), []
    for t in range(int(ops.shape(xs[0])[0])):
        carry, y = step(carry, tuple(x[t] for x in xs))
        ys.append(y)
    return carry, tuple(ops.stack([y[k] for y in ys]) for k in range(len(ys[0])))


def bilstm_layer(
    params: dict, opts: BilmOptions, layer: int, inputs, step_mask, c0, m0, exact_state: bool = True
):
    """Both directions of one LSTM layer, time-major.

    inputs: (forward, backward) inputs, each (T, B, I), the backward one already reversed; step_mask (T, B, 1);
    c0 (2, B, H), m0 (2, B, S) -> (forward, backward) outputs (T, B, S) and the final (c, m) of each row's
    last real step, shaped like c0, m0.

    Each row's real steps come first in both directions (the backward input is reversed within its length), so
    padding can only follow them: with ``exact_state=False`` the padded steps run unmasked (faster), which
    leaves every real output exact but makes the final states and padded outputs meaningless.
    """
    prefix = f"lstm_{layer}_"
    kernels, hidden = params[prefix + "input_kernel"], opts.lstm_dim
    # TF1's LSTMCell adds forget_bias=1 to the forget gate; the reference's gates are i, j, f, o.
    forget = ops.concatenate(
        [ops.zeros((2 * hidden,)), ops.full((hidden,), FORGET_BIAS), ops.zeros((hidden,))]
    )
    biases = params[prefix + "bias"] + ops.cast(forget, params[prefix + "bias"].dtype)
    dtype = kernels.dtype
    # Reduced precision (bfloat16, float16): the products in it, and between them the gates' element-wise work and
    # the cell state in float32. CPUs multiply bf16 natively (AVX512-BF16, AMX) but run its element-wise functions
    # through float32 conversions; kept in float32 they cost what they cost in a float32 run, and the cell state
    # sums without bf16's rounding. Original architecture, 2-core Xeon with AMX, in process: the recurrence 276 ->
    # 388 GFLOP/s, 1,888 -> 2,277 tok/s; the vectors nearer float32's (0.0052 -> 0.0038 on 2,000 tweets).
    gates = "float32" if standardize_dtype(dtype) in ("bfloat16", "float16") else dtype
    projected = []
    for d, x in enumerate(inputs):
        shape = ops.shape(x)
        # Input projections of all time steps in one product, outside the recurrence.
        flat = ops.matmul(ops.reshape(x, (-1, shape[2])), kernels[d])
        flat = ops.cast(flat, gates) + ops.cast(biases[d], gates)
        projected.append(ops.reshape(flat, (shape[0], shape[1], -1)))  # (T, B, 4H)
    state_kernels = (params[prefix + "state_kernel"][0], params[prefix + "state_kernel"][1])  # (S, 4H) each
    proj = params.get(prefix + "proj_kernel")
    proj_kernels = (proj[0], proj[1]) if proj is not None else None  # (H, S) each
    cell_clip, proj_clip = opts.cell_clip, opts.proj_clip

    def cell(x_t, c, m, state_kernel, proj_kernel, keep):
        z = x_t + ops.cast(ops.matmul(m, state_kernel), gates)  # (B, 4H)
        i, j, f, o = ops.split(z, 4, axis=-1)  # the reference's gate order
        c_new = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(j)  # forget bias is in the projected input
        if cell_clip:
            c_new = ops.clip(c_new, -cell_clip, cell_clip)
        m_new = ops.cast(ops.sigmoid(o) * ops.tanh(c_new), dtype)
        if proj_kernel is not None:
            m_new = ops.matmul(m_new, proj_kernel)
            if proj_clip:
                m_new = ops.clip(m_new, -proj_clip, proj_clip)
        if not exact_state:
            return c_new, m_new, m_new
        keep_b = keep > 0
        return ops.where(keep_b, c_new, c), ops.where(keep_b, m_new, m), m_new * keep

    def step(carry, step_inputs):
        c_f, c_b, m_f, m_b = carry
        x_f, x_b, keep = step_inputs
        c_f, m_f, y_f = cell(x_f, c_f, m_f, state_kernels[0], proj_kernels and proj_kernels[0], keep)
        c_b, m_b, y_b = cell(x_b, c_b, m_b, state_kernels[1], proj_kernels and proj_kernels[1], keep)
        return (c_f, c_b, m_f, m_b), (y_f, y_b)

    init = (ops.cast(c0[0], gates), ops.cast(c0[1], gates), m0[0], m0[1])
    (c_f, c_b, m_f, m_b), outputs = scan(step, init, (projected[0], projected[1], step_mask), m0.dtype)
    return outputs, (ops.cast(ops.stack([c_f, c_b]), dtype), ops.stack([m_f, m_b]))


def bilm_forward(params: dict, opts: BilmOptions, char_ids, lengths, c0, m0, exact_state: bool = True):
    """The whole biLM.

    char_ids (B, T, C) int32 (0 = padding token), lengths (B,) incl. <S>/</S>,
    c0 (n_layers, 2, B, H), m0 (n_layers, 2, B, S): initial states (zeros unless stateful).
    Returns layers time-major (n_layers + 1, T, B, 2P) - the token layer duplicated, then [forward; backward]
    of each LSTM layer - and the final states (c, m) shaped like c0, m0. With ``exact_state=False`` only the
    real steps' outputs are meaningful (see ``bilstm_layer``).
    """
    return bilm_from_embedding(
        params, opts, token_embedding(params, opts, char_ids), lengths, c0, m0, exact_state
    )


def bilm_from_embedding(
    params: dict, opts: BilmOptions, embedding, lengths, c0, m0, exact_state: bool = True
):
    """The biLM above the token layer: embedding (B, T, P) (what ``token_embedding`` gives) -> as ``bilm_forward``.

    The token layer is context-free (a token's vector depends on its characters alone), so a caller may compute
    it once per distinct token and gather it into ``embedding`` (the runtime's token cache does).
    """
    dtype = params["lstm_0_bias"].dtype  # the compute precision the weights were cast to
    embedding = ops.transpose(ops.cast(embedding, dtype), (1, 0, 2))  # (T, B, P)
    c0, m0 = ops.cast(c0, dtype), ops.cast(m0, dtype)
    steps = ops.shape(embedding)[0]
    mask = ops.expand_dims(ops.arange(steps, dtype="int32"), 1) < ops.expand_dims(lengths, 0)  # (T, B)
    step_mask = ops.expand_dims(ops.cast(mask, embedding.dtype), -1)  # (T, B, 1)
    x = (embedding, reverse_sequence(embedding, lengths))
    layers = [ops.concatenate([embedding, embedding], axis=-1)]
    finals_c, finals_m = [], []
    for layer in range(opts.n_layers):
        (out_f, out_b), (c, m) = bilstm_layer(
            params, opts, layer, x, step_mask, c0[layer], m0[layer], exact_state
        )
        if opts.use_skip_connections and layer > 0:
            out_f, out_b = out_f + x[0], out_b + x[1]
        layers.append(ops.concatenate([out_f, reverse_sequence(out_b, lengths)], axis=-1))
        finals_c.append(c)
        finals_m.append(m)
        x = (out_f, out_b)
    return ops.stack(layers), ops.stack(finals_c), ops.stack(finals_m)
