"""Importing a large library without the optional packages it loads for features this project never uses.

Some libraries import every optional package that happens to be installed: spaCy's thinc imports PyTorch (and
probes its CUDA devices), Keras imports scikit-learn (for its wrappers) and matplotlib (for its plots), and
TensorFlow imports JAX (for TFLite's converter). In a Spark Python worker that only lemmatizes or embeds, that is
seconds of CPU and hundreds of MB per process. ``hidden`` makes those imports fail while the library itself is
imported (each library catches the ImportError and goes without the feature) and leaves the packages importable
again afterwards, for any code that asks for them later.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def hidden(*names: str) -> Iterator[None]:
    """While the block runs, ``import NAME`` (and of its submodules) raises ImportError for each of ``names``
    that this process has not imported yet; the ones already imported stay as they are. For the whole process:
    a thread that imports one of them meanwhile gets the ImportError too (Spark's Python workers run one task at
    a time, so the embed and clean stages' imports are alone there)."""
    hide = [name for name in names if name not in sys.modules]
    for name in hide:
        sys.modules[name] = None  # type: ignore[assignment]  (Python's own marker: "import of NAME halted")
    try:
        yield
    finally:
        for name in hide:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
