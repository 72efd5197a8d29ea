"""Does a hub module give the same vectors as a native model? The exporter's and the converter's check."""

from __future__ import annotations

import numpy as np

from udfs.elmo.runtime import Elmo

# Our own probe text: plain words, punctuation, a long token (clipped at 48 bytes), non-ASCII, one-token lines.
PROBE_SENTENCES = [
    "The night train to the coast was late again , so we watched the rain .".split(),
    "Vectors for every token : word_emb , lstm_outputs1 , lstm_outputs2 and the mix".split(),
    ["a"],
    ["Überraschung", "!", "café", "naïve", "—", "東京", "😀"],
    ["supercalifragilisticexpialidocious" * 2, "tokens", "longer", "than", "fifty", "bytes"],
]
TOLERANCE = 1e-5


def compare(runtime: Elmo, hub, sentences: list[list[str]] | None = None) -> dict[str, float]:
    """Largest absolute difference per layer between the two runners on ``sentences`` (default: the probe)."""
    sentences = sentences or PROBE_SENTENCES
    diffs = {}
    for layer in ("word_emb", "lstm_outputs1", "lstm_outputs2", "elmo"):
        ours = runtime.embed(sentences, layer=layer)
        theirs = hub.embed(sentences, layer=layer)
        diffs[layer] = max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs, strict=True))
    return diffs
