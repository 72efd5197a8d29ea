"""A native ELMo model -> a TF Hub module: a TF2 SavedModel with the signatures of Google's ELMo module;
``jobs/hub_export.py`` is its command line.

The module loads with ``hub.load(MODULE_DIR)`` (or ``hub.KerasLayer``) and no elmo-lake code, and has:
  - signature ``tokens``: inputs ``tokens`` (string [batch, max_length], padded with "") and ``sequence_len``
    (int32 [batch]); signature ``default``: input ``default`` (string [batch], split on spaces);
  - outputs ``word_emb`` [batch, max_length, projection_dim], ``lstm_outputs1`` and ``lstm_outputs2``
    [batch, max_length, 2 x projection_dim], ``elmo`` (the scalar mix of the three, the layer-0 embedding
    doubled), ``default`` [batch, 2 x projection_dim] (mean of ``elmo`` over each sentence's tokens) and
    ``sequence_len``; padding positions are zero.
Its variables carry the module names of ``hub_layout.py`` (so ``hub_to_native.py`` turns it back into
the same hdf5) and ``assets/elmo_options.json`` holds the options. Unlike Google's module, every sentence starts
from zero LSTM state. The export is checked before it is moved into place: the module is loaded back with
``hub.load`` and must reproduce the native runtime's vectors to 1e-5.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from udfs.elmo.hub_layout import MIX_SCALE, MIX_WEIGHTS, OPTIONS_ASSET, hub_name
from udfs.elmo.options import BilmOptions
from udfs.elmo.runtime import ScalarMix


def build_module(opts: BilmOptions, arrays: dict[str, np.ndarray], mix: ScalarMix, options_file: Path):
    """A ``tf.Module`` holding the weights as variables named like Google's module, with both signatures."""
    import tensorflow as tf

    from udfs.elmo.keras_import import import_keras

    keras = import_keras()
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("exporting a hub module needs the TensorFlow backend (KERAS_BACKEND=tensorflow)")
    from udfs.elmo.bilm import bilm_forward
    from udfs.elmo.chars import BOS_CHAR, BOW_CHAR, EOS_CHAR, EOW_CHAR, PAD_CHAR, special_token_ids
    from udfs.elmo.weights import to_params

    n_chars = opts.max_characters_per_token

    class ElmoModule(tf.Module):
        def __init__(self):
            super().__init__(name="elmo")
            self.weights = {}
            for name, value in arrays.items():
                if (
                    name == "char_embed"
                ):  # the module keeps the padding id's (zero) row, as the reference graph
                    value = np.concatenate([np.zeros((1, value.shape[1]), np.float32), value])
                self.weights[name] = tf.Variable(value, trainable=False, name=hub_name(name))
            self.mix_weights = tf.Variable(mix.raw_weights.astype(np.float32), name=MIX_WEIGHTS)
            self.mix_scale = tf.Variable(np.array([mix.gamma], np.float32), name=MIX_SCALE)
            self.options = tf.saved_model.Asset(str(options_file))

        def _char_ids(self, tokens, sequence_len):
            """Strings (B, T) -> char ids (B, T + 2, C) exactly as ``CharEncoder`` makes them, and lengths."""
            clipped = tf.strings.substr(tokens, 0, n_chars - 2, unit="BYTE")
            raw = tf.io.decode_raw(clipped, tf.uint8, fixed_length=n_chars - 2)  # zero-padded bytes
            raw = tf.pad(tf.cast(raw, tf.int32), [[0, 0], [0, 0], [1, 1]])  # position p holds byte p - 1
            n_bytes = tf.strings.length(clipped, unit="BYTE")[..., None]
            pos = tf.range(n_chars)
            ids = tf.where(
                pos == 0,
                BOW_CHAR,
                tf.where(pos <= n_bytes, raw, tf.where(pos == n_bytes + 1, EOW_CHAR, PAD_CHAR)),
            )
            steps = tf.shape(tokens)[1]
            length = tf.minimum(sequence_len, steps)
            real = tf.range(steps)[None, :] < length[:, None]
            ids = tf.where(real[..., None], ids + 1, 0)  # +1: the reference's ids, 0 = padding token
            rows = tf.shape(tokens)[0]
            bos = tf.broadcast_to(
                tf.constant(special_token_ids(BOS_CHAR, n_chars))[None, None], [rows, 1, n_chars]
            )
            ids = tf.concat([bos, ids, tf.zeros([rows, 1, n_chars], tf.int32)], axis=1)
            at_eos = tf.range(steps + 2)[None, :] == (length + 1)[:, None]
            ids = tf.where(
                at_eos[..., None], tf.constant(special_token_ids(EOS_CHAR, n_chars))[None, None], ids
            )
            return ids, length

        def _outputs(self, tokens, sequence_len):
            ids, length = self._char_ids(tokens, sequence_len)
            rows = tf.shape(ids)[0]
            params = to_params(self.weights | {"char_embed": self.weights["char_embed"][1:]}, opts, keras.ops)
            c0 = tf.zeros([opts.n_layers, 2, rows, opts.lstm_dim])
            m0 = tf.zeros([opts.n_layers, 2, rows, opts.state_dim])
            layers, _, _ = bilm_forward(params, opts, ids, length + 2, c0, m0, exact_state=False)
            steps = tf.shape(tokens)[1]
            layers = tf.transpose(layers, [0, 2, 1, 3])[:, :, 1 : steps + 1]  # (L + 1, B, T, 2P), no <S> </S>
            mask = tf.cast(tf.range(steps)[None, :] < length[:, None], tf.float32)[None, ..., None]
            layers = layers * mask
            weights = tf.nn.softmax(self.mix_weights)
            elmo = tf.reshape(self.mix_scale, []) * tf.tensordot(weights, layers, axes=1)
            count = tf.cast(tf.maximum(length, 1), tf.float32)[:, None]
            out = {
                "word_emb": layers[0, :, :, : opts.projection_dim],
                "elmo": elmo,
                "default": tf.reduce_sum(elmo, axis=1) / count,
                "sequence_len": length,
            }
            for k in range(1, opts.n_layers + 1):
                out[f"lstm_outputs{k}"] = layers[k]
            return out

        # autograph=False: no Python control flow over tensors here (``bilm.scan`` builds its own while_loop);
        # converting would leave __autograph_generated_file*.py in the temp folder of a process that is killed
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, None], tf.string, name="tokens"),
                tf.TensorSpec([None], tf.int32, name="sequence_len"),
            ],
            autograph=False,
        )
        def tokens(self, tokens, sequence_len):
            return self._outputs(tokens, sequence_len)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="default")], autograph=False)
        def strings(self, default):
            words = tf.strings.split(default, sep=" ")
            words = tf.ragged.boolean_mask(words, tf.strings.length(words) > 0)
            return self._outputs(words.to_tensor(""), tf.cast(words.row_lengths(), tf.int32))

    return ElmoModule()


def export(model_dir: str | Path, output: str | Path, overwrite: bool = False) -> dict[str, float]:
    """Write ``model_dir`` (native) as a hub module at ``output``; returns the check's max differences."""
    import tensorflow as tf

    from udfs.elmo.hub_agreement import compare
    from udfs.elmo.hub_runner import HubElmo
    from udfs.elmo.runtime import Elmo, read_model

    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"--output {output} already exists; pass --overwrite to replace it")
    stored = read_model(model_dir)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        options_file = staging / OPTIONS_ASSET
        options_file.write_text(json.dumps(stored.options.to_json(), indent=2), encoding="utf-8")
        module = build_module(stored.options, stored.arrays, stored.scalar_mix, options_file)
        module_dir = staging / "module"
        tf.saved_model.save(
            module,
            str(module_dir),
            signatures={"tokens": module.tokens, "default": module.strings},
        )
        native = Elmo(stored.options, stored.arrays, scalar_mix=stored.scalar_mix, model_id=stored.model_id)
        diffs = compare(native, HubElmo(module_dir))
        if output.exists():
            shutil.rmtree(output)
        module_dir.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return diffs
