"""The biLM's forward pass, piece by piece, in Keras 3 ops (TensorFlow, JAX or PyTorch underneath).

Each piece is a pure function of its parameters (a dict of backend tensors, see ``weights.py``) and its inputs,
so one compiled function serves every batch of a shape and nothing is carried between calls unless the caller
passes the LSTM state in. Shapes are noted as (batch B, time steps T incl. <S> and </S>, chars C, ...).
"""

from __future__ import annotations

import keras
from keras import ops

from udfs.elmo.options import BilmOptions


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
        conv = ops.matmul(cols, params[f"cnn_kernel_{i}"])  # (N, positions, n_i)
        pieces.append(ops.max(conv, axis=1) + params[f"cnn_bias_{i}"])  # max(x + b) == max(x) + b
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


def token_embedding(params: dict, opts: BilmOptions, char_ids):
    """(B, T, C) -> (B, T, P): char CNN, highway layers, projection to the LSTM's input size."""
    shape = ops.shape(char_ids)
    h = highway(params, opts, char_cnn(params, opts, char_ids))
    if "proj_kernel" in params:
        h = ops.matmul(h, params["proj_kernel"]) + params["proj_bias"]
    return ops.reshape(h, (shape[0], shape[1], opts.projection_dim))


def reverse_sequence(x, lengths):
    """Reverse each row's first ``lengths[b]`` steps along axis 1, leaving its padding where it is."""
    shape = ops.shape(x)
    steps = ops.expand_dims(ops.arange(shape[1], dtype="int32"), 0)  # (1, T)
    length = ops.expand_dims(ops.cast(lengths, "int32"), 1)  # (B, 1)
    index = ops.where(steps < length, length - 1 - steps, steps)  # (B, T)
    index = ops.broadcast_to(ops.expand_dims(index, -1), shape)
    return ops.take_along_axis(x, index, axis=1)


def scan(step, init, xs):
    """``carry, ys = scan(step, init, xs)`` over axis 0 of ``xs``, with ``ys`` shaped unlike the carry.

    (``keras.ops.scan`` on TensorFlow insists that each step's output has the carry's shape.)
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.lax.scan(step, init, xs)
    if backend == "tensorflow":
        import tensorflow as tf

        n = tf.shape(xs[0])[0]
        inputs = [tf.TensorArray(x.dtype, size=n).unstack(x) for x in xs]
        outputs = tf.TensorArray(init[-1].dtype, size=n)

        def body(i, carry, outputs):
            carry, y = step(carry, tuple(t.read(i) for t in inputs))
            return i + 1, carry, outputs.write(i, y)

        _, carry, outputs = tf.while_loop(lambda i, *_: i < n, body, (tf.constant(0), tuple(init), outputs))
        return carry, outputs.stack()
    carry, ys = tuple(init), []
    for t in range(int(ops.shape(xs[0])[0])):
        carry, y = step(carry, tuple(x[t] for x in xs))
        ys.append(y)
    return carry, ops.stack(ys)


def bilstm_layer(params: dict, opts: BilmOptions, layer: int, inputs, step_mask, c0, m0):
    """Both directions of one LSTM layer at once.

    inputs (2, B, T, I) - forward and (already reversed) backward inputs; step_mask (T, B, 1);
    c0 (2, B, H), m0 (2, B, S) -> outputs (2, B, T, S), final (c, m) of each row's last real step.
    """
    prefix = f"lstm_{layer}_"
    # Input projections of all time steps in one product, outside the recurrence.
    projected = ops.matmul(inputs, ops.expand_dims(params[prefix + "input_kernel"], 1))  # (2, B, T, 4H)
    projected = projected + ops.expand_dims(ops.expand_dims(params[prefix + "bias"], 1), 1)
    projected = ops.transpose(projected, (2, 0, 1, 3))  # (T, 2, B, 4H)
    state_kernel = params[prefix + "state_kernel"]  # (2, S, 4H)
    proj_kernel = params.get(prefix + "proj_kernel")  # (2, H, S) or None
    cell_clip, proj_clip = opts.cell_clip, opts.proj_clip

    def step(carry, step_inputs):
        c, m = carry
        x_t, keep = step_inputs  # (2, B, 4H), (B, 1)
        z = x_t + ops.matmul(m, state_kernel)
        i, j, f, o = ops.split(z, 4, axis=-1)  # the reference's gate order
        c_new = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(j)  # forget bias folded into the bias
        if cell_clip:
            c_new = ops.clip(c_new, -cell_clip, cell_clip)
        m_new = ops.sigmoid(o) * ops.tanh(c_new)
        if proj_kernel is not None:
            m_new = ops.matmul(m_new, proj_kernel)
            if proj_clip:
                m_new = ops.clip(m_new, -proj_clip, proj_clip)
        keep_b = keep > 0
        c = ops.where(keep_b, c_new, c)
        m = ops.where(keep_b, m_new, m)
        return (c, m), m_new * keep

    (c_final, m_final), outputs = scan(step, (c0, m0), (projected, step_mask))
    return ops.transpose(outputs, (1, 2, 0, 3)), (c_final, m_final)  # (2, B, T, S)


def bilm_forward(params: dict, opts: BilmOptions, char_ids, lengths, c0, m0):
    """The whole biLM.

    char_ids (B, T, C) int32 (0 = padding token), lengths (B,) incl. <S>/</S>,
    c0 (n_layers, 2, B, H), m0 (n_layers, 2, B, S): initial states (zeros unless stateful).
    Returns layers (n_layers + 1, B, T, 2P) - token layer duplicated, then [forward; backward] per LSTM layer -
    and the final states (c, m) shaped like c0, m0.
    """
    embedding = token_embedding(params, opts, char_ids)  # (B, T, P)
    steps = ops.shape(char_ids)[1]
    mask = ops.cast(
        ops.expand_dims(ops.arange(steps, dtype="int32"), 0) < ops.expand_dims(lengths, 1), embedding.dtype
    )  # (B, T)
    step_mask = ops.expand_dims(ops.transpose(mask), -1)  # (T, B, 1)
    x = ops.stack([embedding, reverse_sequence(embedding, lengths)])  # (2, B, T, P)
    layers = [ops.concatenate([embedding, embedding], axis=-1)]
    finals_c, finals_m = [], []
    for layer in range(opts.n_layers):
        out, (c, m) = bilstm_layer(params, opts, layer, x, step_mask, c0[layer], m0[layer])
        if opts.use_skip_connections and layer > 0:
            out = out + x
        layers.append(ops.concatenate([out[0], reverse_sequence(out[1], lengths)], axis=-1))
        finals_c.append(c)
        finals_m.append(m)
        x = out
    return ops.stack(layers), ops.stack(finals_c), ops.stack(finals_m)
