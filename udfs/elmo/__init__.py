"""ELMo biLM runtime: the reference architecture in Keras 3 ops, AllenNLP/bilm-tf weights, deterministic batching.

    from udfs.elmo import load_elmo
    elmo = load_elmo("path/to/model")          # options.json + one .hdf5
    vectors = elmo.embed([["Hello", "world"]], layer="elmo", pooling="mean")

Set KERAS_BACKEND (tensorflow, jax, torch) before the first import of keras to pick the backend.
"""

from udfs.elmo.options import BilmOptions, ModelFormatError
from udfs.elmo.runtime import LAYERS, POOLINGS, Elmo, load_elmo

__all__ = ["LAYERS", "POOLINGS", "BilmOptions", "Elmo", "ModelFormatError", "load_elmo"]
