"""AllenNLP / bilm-tf weight files (hdf5) <-> the runtime's parameters, keyed by the reference's dataset names.

Reference datasets (F = n_filters, P = projection_dim, H = lstm dim, S = P if P < H else H, I = P or S):
    char_embed                                  (n_characters - 1, char_dim)   row 0 (padding) is not stored
    CNN/W_cnn_{i}, CNN/b_cnn_{i}                (1, width, char_dim, n_i), (n_i,)
    CNN_high_{i}/W_carry, b_carry, W_transform, b_transform    (F, F), (F,)
    CNN_proj/W_proj, CNN_proj/b_proj            (F, P), (P,)                    only when F != P
    RNN_{d}/RNN/MultiRNNCell/Cell{l}/LSTMCell/W_0, B, W_P_0    (I + S, 4H), (4H,), (H, S)   d = 0 fw, 1 bw
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from udfs.elmo.options import BilmOptions, ModelFormatError


def lstm_dataset(direction: int, layer: int, name: str) -> str:
    return f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell/{name}"


def expected_datasets(opts: BilmOptions) -> dict[str, tuple[int, ...]]:
    """Every dataset a weights file for ``opts`` must have, with its shape."""
    f, p, h, s, d = opts.n_filters, opts.projection_dim, opts.lstm_dim, opts.state_dim, opts.char_embed_dim
    shapes: dict[str, tuple[int, ...]] = {"char_embed": (261, d)}
    for i, (width, num) in enumerate(opts.filters):
        shapes[f"CNN/W_cnn_{i}"] = (1, width, d, num)
        shapes[f"CNN/b_cnn_{i}"] = (num,)
    for i in range(opts.n_highway):
        for part in ("carry", "transform"):
            shapes[f"CNN_high_{i}/W_{part}"] = (f, f)
            shapes[f"CNN_high_{i}/b_{part}"] = (f,)
    if f != p:
        shapes["CNN_proj/W_proj"] = (f, p)
        shapes["CNN_proj/b_proj"] = (p,)
    for direction in (0, 1):
        for layer in range(opts.n_layers):
            inp = p if layer == 0 else s
            shapes[lstm_dataset(direction, layer, "W_0")] = (inp + s, 4 * h)
            shapes[lstm_dataset(direction, layer, "B")] = (4 * h,)
            if s < h:
                shapes[lstm_dataset(direction, layer, "W_P_0")] = (h, s)
    return shapes


def read_weight_file(path: str | Path, opts: BilmOptions) -> dict[str, np.ndarray]:
    """The reference datasets of ``path``, checked against ``opts``; every problem is named in one error."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"weights file {path} does not exist")
    expected = expected_datasets(opts)
    try:
        with h5py.File(path, "r") as fin:
            problems, arrays = [], {}
            for name, shape in expected.items():
                if name not in fin:
                    problems.append(f"dataset {name} is missing (expected shape {shape})")
                    continue
                found = tuple(fin[name].shape)
                if found != shape:
                    problems.append(f"dataset {name} has shape {found}, the options imply {shape}")
                    continue
                arrays[name] = np.asarray(fin[name][...], dtype=np.float32)
    except (OSError, KeyError) as exc:
        raise ModelFormatError(
            f"cannot read weights file {path} ({exc}); is it truncated or not HDF5?"
        ) from None
    if problems:
        raise ModelFormatError(f"weights file {path} does not match its options: " + "; ".join(problems))
    return arrays


def write_weight_file(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write reference datasets (as ``read_weight_file`` returns them) to an hdf5 file."""
    import h5py

    with h5py.File(path, "w") as fout:
        for name, value in sorted(arrays.items()):
            fout.create_dataset(name, data=np.asarray(value, dtype=np.float32))


def to_params(arrays: dict, opts: BilmOptions, xp=np) -> dict:
    """Reference datasets -> the runtime's parameters (see ``bilm.py`` for their use).

    ``xp`` is the array namespace: numpy (float32 arrays, the default) or ``keras.ops`` (backend tensors; the
    hub exporter uses it inside a traced function, so the SavedModel keeps the reference layout as variables).
    """
    d, f = opts.char_embed_dim, opts.n_filters
    params = {"char_embed": xp.pad(arrays["char_embed"], [(1, 0), (0, 0)])}  # id 0: the padding token's chars
    for i, (width, num) in enumerate(opts.filters):
        params[f"cnn_kernel_{i}"] = xp.reshape(arrays[f"CNN/W_cnn_{i}"], (width * d, num))
        params[f"cnn_bias_{i}"] = arrays[f"CNN/b_cnn_{i}"]
    for i in range(opts.n_highway):
        params[f"highway_kernel_{i}"] = xp.concatenate(
            [arrays[f"CNN_high_{i}/W_carry"], arrays[f"CNN_high_{i}/W_transform"]], axis=1
        )
        params[f"highway_bias_{i}"] = xp.concatenate(
            [arrays[f"CNN_high_{i}/b_carry"], arrays[f"CNN_high_{i}/b_transform"]]
        )
    if f != opts.projection_dim:
        params["proj_kernel"] = arrays["CNN_proj/W_proj"]
        params["proj_bias"] = arrays["CNN_proj/b_proj"]
    h = opts.lstm_dim
    for layer in range(opts.n_layers):
        inp = opts.projection_dim if layer == 0 else opts.state_dim
        kernels = [arrays[lstm_dataset(dr, layer, "W_0")] for dr in (0, 1)]
        biases = [arrays[lstm_dataset(dr, layer, "B")] for dr in (0, 1)]
        params[f"lstm_{layer}_input_kernel"] = xp.stack([k[:inp] for k in kernels])
        params[f"lstm_{layer}_state_kernel"] = xp.stack([k[inp:] for k in kernels])
        params[f"lstm_{layer}_bias"] = xp.stack(biases)
        if opts.state_dim < h:
            params[f"lstm_{layer}_proj_kernel"] = xp.stack(
                [arrays[lstm_dataset(dr, layer, "W_P_0")] for dr in (0, 1)]
            )
    if xp is not np:
        return params
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in params.items()}


def from_params(params: dict[str, np.ndarray], opts: BilmOptions) -> dict[str, np.ndarray]:
    """The runtime's parameters -> reference datasets (the inverse of ``to_params``)."""
    d, f, h = opts.char_embed_dim, opts.n_filters, opts.lstm_dim
    arrays: dict[str, np.ndarray] = {"char_embed": np.asarray(params["char_embed"])[1:]}
    for i, (width, num) in enumerate(opts.filters):
        arrays[f"CNN/W_cnn_{i}"] = np.asarray(params[f"cnn_kernel_{i}"]).reshape(1, width, d, num)
        arrays[f"CNN/b_cnn_{i}"] = np.asarray(params[f"cnn_bias_{i}"])
    for i in range(opts.n_highway):
        kernel, bias = np.asarray(params[f"highway_kernel_{i}"]), np.asarray(params[f"highway_bias_{i}"])
        arrays[f"CNN_high_{i}/W_carry"], arrays[f"CNN_high_{i}/W_transform"] = kernel[:, :f], kernel[:, f:]
        arrays[f"CNN_high_{i}/b_carry"], arrays[f"CNN_high_{i}/b_transform"] = bias[:f], bias[f:]
    if f != opts.projection_dim:
        arrays["CNN_proj/W_proj"] = np.asarray(params["proj_kernel"])
        arrays["CNN_proj/b_proj"] = np.asarray(params["proj_bias"])
    for layer in range(opts.n_layers):
        for dr in (0, 1):
            kernel = np.concatenate(
                [
                    np.asarray(params[f"lstm_{layer}_input_kernel"])[dr],
                    np.asarray(params[f"lstm_{layer}_state_kernel"])[dr],
                ]
            )
            bias = np.asarray(params[f"lstm_{layer}_bias"])[dr]
            arrays[lstm_dataset(dr, layer, "W_0")] = kernel
            arrays[lstm_dataset(dr, layer, "B")] = bias
            if opts.state_dim < h:
                arrays[lstm_dataset(dr, layer, "W_P_0")] = np.asarray(params[f"lstm_{layer}_proj_kernel"])[dr]
    return {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}


def random_arrays(opts: BilmOptions, seed: int = 0) -> dict[str, np.ndarray]:
    """Reference datasets of the right shapes with small random values (benchmarks, tests)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in expected_datasets(opts).items():
        scale = 1.0 / np.sqrt(shape[-2]) if len(shape) >= 2 else 0.1
        arrays[name] = (rng.standard_normal(shape) * scale).astype(np.float32)
    return arrays
