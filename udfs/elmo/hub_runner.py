"""Run a TF Hub ELMo module (Google's ``elmo/2``, ``elmo/3``, or one exported by this project) like the runtime.

TensorFlow only: the module is loaded with ``tensorflow_hub.load`` (TF2; no ``hub.Module``, no sessions) and
called through one of its signatures:
  - ``tokens`` (default): our tokens go in as they are (``tokens`` padded with "", ``sequence_len``);
  - ``default``: each sentence goes in as one string, tokens joined by spaces, and the module splits it.
Its outputs map onto the runtime's layers: ``word_emb`` (doubled, as the runtime's layer 0 is the token embedding
for both directions), ``lstm_outputs1``, ``lstm_outputs2``, ``elmo`` (the module's own trained mix) and ``all``.
Batching is the runtime's (sorted by length, cut by a token budget); whether a sentence's vectors also ignore
the rest of its batch is up to the module (ours do; Google's are reported not to: tensorflow/hub#369).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from udfs.elmo.options import ModelFormatError
from udfs.elmo.runtime import (
    DEFAULT_TOKEN_BUDGET,
    BatchedEmbedder,
    check_choice,
    exact_float32_products,
    hash_file,
)

SIGNATURES = ("tokens", "default")
OUTPUTS = ("word_emb", "lstm_outputs1", "lstm_outputs2", "elmo")


def hub_model_id(folder: str | Path, signature: str = "tokens") -> str:
    """A hash of every file of the module (and of the signature when it is not ``tokens``)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".lock")):
        digest.update(str(path.relative_to(folder)).encode())
        hash_file(digest, path)
    suffix = "" if signature == "tokens" else f"-{signature}"
    return "hub-" + digest.hexdigest()[:16] + suffix


def import_hub():
    """tensorflow_hub, without its pkg_resources deprecation warning."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        import tensorflow_hub

    return tensorflow_hub


class HubElmo(BatchedEmbedder):
    """A hub module behind the runtime's interface (``embed``, ``dim``, ``model_id``, ``backend``, ``device``)."""

    def __init__(
        self,
        folder: str | Path,
        signature: str = "tokens",
        token_budget: int = DEFAULT_TOKEN_BUDGET,
        model_id: str | None = None,
        max_rows: int | None = None,
    ):
        from udfs.elmo.keras_import import import_keras

        keras = import_keras()
        if keras.backend.backend() != "tensorflow":
            raise ModelFormatError(
                f"TF Hub modules run on TensorFlow only, and Keras runs on {keras.backend.backend()}: use "
                "KERAS_BACKEND=tensorflow, or convert the module (python -m jobs.hub_convert) to run it on "
                "any backend"
            )
        import tensorflow as tf

        exact_float32_products("tensorflow")
        hub = import_hub()
        check_choice("signature", signature, SIGNATURES)
        self.folder, self.signature = str(folder), signature
        self.backend = "tensorflow"
        self.token_budget, self.max_rows = int(token_budget), max_rows
        try:
            self.module = hub.load(self.folder)
        except Exception as exc:  # TF raises many kinds; all mean the same to the user
            text = (getattr(exc, "message", None) or str(exc)).strip().splitlines()
            raise ModelFormatError(
                f"cannot load hub module {folder}: {text[0] if text else type(exc).__name__}; is it a complete, "
                "unpacked TF Hub module (saved_model.pb and variables/)? Fetch it again if it was cut short"
            ) from None
        signatures = dict(getattr(self.module, "signatures", {}) or {})
        if signature not in signatures:
            raise ModelFormatError(
                f"hub module {folder} has no {signature!r} signature (it has: {', '.join(signatures) or 'none'}); "
                "an ELMo module has 'tokens' and 'default'"
            )
        self._fn = signatures[signature]
        self._inputs = sorted(self._fn.structured_input_signature[1])
        if signature == "tokens" and self._inputs != ["sequence_len", "tokens"]:
            raise ModelFormatError(
                f"hub module {folder}: the 'tokens' signature takes {self._inputs}, expected tokens and sequence_len"
            )
        outputs = set(self._fn.structured_outputs)
        self._lstm = sorted((k for k in outputs if k.startswith("lstm_outputs")), key=lambda k: int(k[12:]))
        missing = [k for k in OUTPUTS if k not in outputs]
        if missing:
            raise ModelFormatError(
                f"hub module {folder}: the {signature!r} signature lacks output(s) {', '.join(missing)} "
                f"(it has: {', '.join(sorted(outputs))}); is it an ELMo module?"
            )
        self.model_id = model_id or hub_model_id(folder, signature)
        self._tf = tf
        probe = self._run([["elmo"]])
        self.n_layers = len(self._lstm)
        self.dim = int(probe["lstm_outputs1"].shape[-1])

    @property
    def device(self) -> str:
        return "gpu" if self._tf.config.list_logical_devices("GPU") else "cpu"

    def _run(self, sentences: list[list[str]]) -> dict[str, np.ndarray]:
        tf = self._tf
        if self.signature == "tokens":
            steps = max(len(s) for s in sentences)
            tokens = [s + [""] * (steps - len(s)) for s in sentences]
            out = self._fn(
                tokens=tf.constant(tokens, tf.string),
                sequence_len=tf.constant([len(s) for s in sentences], tf.int32),
            )
        else:
            out = self._fn(**{self._inputs[0]: tf.constant([" ".join(s) for s in sentences], tf.string)})
        return {k: v.numpy() for k, v in out.items() if k in (*OUTPUTS, *self._lstm, "sequence_len")}

    def _run_rows(self, sentences: list[list[str]]) -> list[tuple[np.ndarray, np.ndarray]]:
        out = self._run(sentences)
        counts = out.get("sequence_len", np.array([len(s) for s in sentences]))
        rows = []
        for row, n in enumerate(int(c) for c in counts):
            word = out["word_emb"][row, :n]
            tokens = np.stack([np.concatenate([word, word], axis=-1)] + [out[k][row, :n] for k in self._lstm])
            rows.append((tokens, out["elmo"][row, :n]))
        return rows
