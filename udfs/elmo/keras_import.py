"""Keras for the runtime, imported without the optional packages it would load for features the runtime never uses.

Keras imports scikit-learn (its wrappers) and matplotlib (its plots) whenever they are installed, and TensorFlow
imports JAX (TFLite's converter); the project's own environment has scikit-learn (the train stage), a ``--dev``
one or a Databricks ML runtime has the rest. Measured on a 2-core AMD EPYC, importing Keras and running one
product: on TensorFlow 10.0 s of CPU with them, 6.7 s without; on PyTorch 11.8 / 7.8 s; on JAX 6.4 / 3.9 s; and
about 190 MB of memory. Every Spark Python worker that embeds pays that once. They are hidden only while Keras is
first imported in a process (``udfs.optional_imports.hidden``), only those not imported already, and JAX only when
Keras will not run on it. Afterwards they import as usual; what stays without them is Keras' scikit-learn wrappers
and plotting helpers in that process (import scikit-learn or matplotlib before the runtime where a notebook uses
those).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from udfs.optional_imports import hidden

# what Keras (and TensorFlow under it) imports when installed, for features the runtime does not use
UNUSED_BY_THE_RUNTIME = ("sklearn", "matplotlib")


def backend_to_be() -> str:
    """The backend Keras will choose when first imported: KERAS_BACKEND, else keras.json's, else tensorflow."""
    name = os.environ.get("KERAS_BACKEND")
    if name:
        return name
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    try:
        return str(json.loads((home / "keras.json").read_text(encoding="utf-8")).get("backend", "tensorflow"))
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def unused_by_the_runtime(backend: str) -> tuple[str, ...]:
    """The packages to hide while Keras or ``backend``'s own library is first imported."""
    return UNUSED_BY_THE_RUNTIME + (("jax",) if backend in ("tensorflow", "torch") else ())


def import_keras():
    """``import keras`` (with its backend) for the runtime; the module itself is returned."""
    if "keras" in sys.modules:
        return sys.modules["keras"]
    with hidden(*unused_by_the_runtime(backend_to_be())):
        import keras
    return keras
