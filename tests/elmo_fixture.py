"""The reference biLM fixture (../shared/fixtures/bilm-tf) and its expected outputs, for the ELMo tests."""

from __future__ import annotations

import json

import h5py
import numpy as np

from tests.conftest import shared_path

# The tolerances the project promises (README, "The ELMo runtime"). Computed floats are compared with these, never
# bitwise: CPUs, thread counts and kernel choices round the last bit differently. Bitwise comparisons are kept
# only for values that are copied, not computed (weights round-tripped through hdf5, layer 0 doubled).
BATCH_INVARIANCE_TOL = 1e-6  # the same sentence in another batch, partition, order or call
REFERENCE_TOL = 1e-5  # against the reference implementation's outputs


def assert_batch_invariant(got, want) -> None:
    """The batch-invariance promise for any model: the largest difference within a sentence's vectors is at most
    ``BATCH_INVARIANCE_TOL`` times the largest magnitude among them (at least 1).

    Float32 rounding differences grow with a model's values (the fixture's stay below 1, so 1e-6 holds
    absolutely there; the default model's reach 18, and its vectors of one sentence in two batches differ by up
    to 6e-6).
    """
    got, want = np.asarray(got, dtype=np.float32), np.asarray(want, dtype=np.float32)
    assert got.shape == want.shape, (got.shape, want.shape)
    if want.size:
        scale = max(1.0, float(np.abs(want).max()))
        worst = float(np.abs(got - want).max())
        assert worst <= BATCH_INVARIANCE_TOL * scale, f"max abs difference {worst:.3g} > 1e-6 x {scale:.3g}"


def fixture_dir():
    return shared_path("fixtures", "bilm-tf")


def reference_sentences() -> list[list[str]]:
    """Three groups of 10 sentences (strings)."""
    return json.loads((fixture_dir() / "lm_embeddings_sentences.json").read_text(encoding="utf-8"))


def reference_outputs() -> list[list[np.ndarray]]:
    """expected[k][i]: top LSTM layer of sentence i of group k, (n_tokens, 32) = [forward; backward]."""
    expected = []
    for k in range(3):
        with h5py.File(fixture_dir() / f"lm_embeddings_{k}.hdf5", "r") as fin:
            expected.append([np.concatenate([fin[str(i)][0], fin[str(i)][1]], axis=-1) for i in range(10)])
    return expected


def reference_batches() -> list[list[list[str]]]:
    """Batch i holds sentence i of groups 0, 1, 2, tokenised on spaces, as the reference ran them."""
    groups = reference_sentences()
    return [[groups[k][i].split() for k in range(3)] for i in range(10)]


def fixture_spec(backend: str, sets=(("elmo", "mean"),), threads: int = 1):
    """What an embed task is given to run the fixture model (a local folder, the token cache off)."""
    from udfs.embed import EmbedSpec

    return EmbedSpec(
        model_dir=str(fixture_dir()),
        shipped=False,
        sets=sets,
        token_budget=2048,
        backend=backend,
        threads=threads,
        token_cache_mb=0,
    )
