"""The token cache: exact (on = off to the promised tolerance), bounded in bytes, reused across calls; and the
reduced-precision option, which changes the vectors and therefore the model_id."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest

from jobs.platform.paths import default_model
from tests.conftest import shared_path
from tests.elmo_fixture import assert_batch_invariant, fixture_dir, reference_sentences
from udfs.elmo.token_cache import ENTRY_OVERHEAD, TokenCache, cache_megabytes


def fixture_sentences() -> list[list[str]]:
    return [s.split() for group in reference_sentences() for s in group]


AWKWARD = [
    ["x" * 200, "x" * 48, "x" * 47],  # the first two clip to the same bytes: one vector, two keys
    [
        "naïve",
        "café",
        "東京",
        "📱🔋",
        "$&@*#",
        "<S>",
        "</S>",
        "",
    ],  # a literal "<S>" is a word, not the marker
    [],
    ["a"],
    ["the", "the", "the", "the"],
]


def model_pair(folder, **kwargs):
    from udfs.elmo import load_elmo

    return load_elmo(folder, token_cache_mb=-1, **kwargs), load_elmo(folder, token_cache_mb=0, **kwargs)


def assert_close(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert_batch_invariant(a, b)


def test_lru_keeps_the_most_recent_tokens_within_its_byte_budget():
    dim = 4
    cache = TokenCache(dim, 3 * (4 * dim + ENTRY_OVERHEAD))
    assert cache.capacity == 3

    def compute(tokens):
        return np.array([[len(t), ord(t[0]), 0, 1] for t in tokens], np.float32)

    vectors, rows = cache.vectors_for(["ab", "c", "ab", "def"], compute)
    assert [compute([t])[0].tolist() for t in ["ab", "c", "def"]] == vectors.tolist()
    assert rows.tolist() == [0, 1, 0, 2]
    assert (cache.hits, cache.misses, len(cache)) == (1, 3, 3)
    cache.vectors_for(["c"], compute)  # "ab" is now the least recently used
    cache.vectors_for(["g"], compute)
    assert len(cache) == 3 and cache.misses == 4
    computed = []
    cache.vectors_for(["ab", "c", "def", "g"], lambda ts: computed.extend(ts) or compute(ts))
    assert computed == ["ab"]  # evicted; the others were kept
    assert cache.nbytes <= cache.max_bytes
    # more distinct tokens in one call than the cache holds: every vector still right, the cache stays bounded
    many = [f"t{i}" for i in range(10)]
    vectors, _ = cache.vectors_for(many, compute)
    assert vectors.tolist() == compute(many).tolist() and len(cache) == 3


def test_sizes_off_and_automatic():
    assert not TokenCache(512, 0).enabled
    assert 0 < cache_megabytes(-1) <= 256
    assert cache_megabytes(64) == 64
    with pytest.raises(ValueError, match=">= 0 MB, or -1"):
        cache_megabytes(-5)


def test_cache_on_equals_cache_off_on_the_fixture_and_awkward_inputs():
    on, off = model_pair(fixture_dir())
    sentences = fixture_sentences() + AWKWARD
    for layer, pooling in (("all", "none"), ("elmo", "mean"), ("word_emb", "max")):
        want = off.embed(sentences, layer=layer, pooling=pooling)
        assert_close(on.embed(sentences, layer=layer, pooling=pooling), want)
        assert_close(on.embed(sentences, layer=layer, pooling=pooling), want)  # served from the cache now
    stats = on.token_cache.stats()
    assert stats["hit_rate"] > 0.6 and stats["entries"] == len({t for s in sentences for t in s})
    assert off.token_cache.stats()["hits"] == off.token_cache.stats()["misses"] == 0


def test_a_cache_smaller_than_one_batch_is_still_exact():
    from udfs.elmo import load_elmo

    tiny = load_elmo(fixture_dir(), token_cache_mb=0)
    tiny.token_cache = TokenCache(
        tiny.options.projection_dim, 5 * (4 * tiny.options.projection_dim + ENTRY_OVERHEAD)
    )
    off = load_elmo(fixture_dir(), token_cache_mb=0)
    sentences = fixture_sentences()
    assert_close(tiny.embed(sentences, layer="all"), off.embed(sentences, layer="all"))
    assert len(tiny.token_cache) == 5


def real_tweets(n: int) -> list[list[str]]:
    with open(shared_path("data", "tweets", "train.csv"), encoding="utf-8", newline="") as fin:
        rows = [r["tweet"] for r, _ in zip(csv.DictReader(fin), range(n), strict=False)]
    return [re.findall(r"\w+|[^\w\s]+", t) for t in rows]


@pytest.mark.slow
def test_cache_on_equals_cache_off_on_real_tweets_with_the_default_model():
    on, off = model_pair(default_model())
    tweets = real_tweets(600)
    want = off.embed(tweets, layer="all")
    got = on.embed(tweets, layer="all")
    assert_close(got, want)
    assert on.token_cache.stats()["hit_rate"] > 0.5  # tweets repeat most of their tokens


def test_reduced_precision_is_close_and_has_its_own_model_id():
    from udfs.elmo import load_elmo

    exact = load_elmo(fixture_dir())
    sentences = fixture_sentences()
    want = exact.embed(sentences, layer="elmo", pooling="mean")
    scale = max(float(np.abs(v).max()) for v in want)
    for precision, suffix, bound in (("bfloat16", "-bf16", 0.05), ("float16", "-fp16", 0.01)):
        reduced = load_elmo(fixture_dir(), precision=precision)
        assert reduced.model_id == exact.model_id + suffix
        got = reduced.embed(sentences, layer="elmo", pooling="mean")
        assert all(v.dtype == np.float32 for v in got)
        worst = max(float(np.abs(a - b).max()) for a, b in zip(got, want, strict=True))
        assert 0 < worst < bound * scale, (precision, worst, scale)
    with pytest.raises(ValueError, match="precision 'float64' is not one of"):
        load_elmo(fixture_dir(), precision="float64")
