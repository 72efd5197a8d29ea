"""The runtime's promises: batching never changes a sentence's vectors; awkward inputs work; bad ones fail clearly."""

from __future__ import annotations

import numpy as np
import pytest

from tests.elmo_fixture import BATCH_INVARIANCE_TOL, fixture_dir, reference_sentences


def sentences() -> list[list[str]]:
    """The reference fixture's 30 sentences, tokenised on spaces (skips when ../shared is absent)."""
    return [s.split() for group in reference_sentences() for s in group]


@pytest.fixture(scope="module", params=["token cache on", "token cache off"])
def elmo(request):
    """The fixture model, with the token cache on (the default) and off: every promise holds either way."""
    from udfs.elmo import load_elmo

    return load_elmo(fixture_dir(), token_cache_mb=-1 if request.param == "token cache on" else 0)


def embed_with(elmo, sentences, budget, max_rows=None, **kwargs):
    saved = elmo.token_budget, elmo.max_rows
    elmo.token_budget, elmo.max_rows = budget, max_rows
    try:
        return elmo.embed(sentences, **kwargs)
    finally:
        elmo.token_budget, elmo.max_rows = saved


def test_vectors_do_not_depend_on_batching_order_neighbours_or_padding(elmo):
    alone = [elmo.embed([s])[0] for s in sentences()[:8]]
    together = embed_with(elmo, sentences(), 100_000)
    tiny_batches = embed_with(elmo, sentences(), 60)
    rows_of_two = embed_with(elmo, sentences(), 100_000, max_rows=2)
    order = np.random.default_rng(3).permutation(len(sentences()))
    shuffled = elmo.embed([sentences()[i] for i in order])
    with_short_neighbours = elmo.embed([["a"], sentences()[0], ["b", "c"]] * 3)
    for i in range(len(sentences())):
        reference = together[i]
        for other in (tiny_batches[i], rows_of_two[i], shuffled[list(order).index(i)]):
            np.testing.assert_allclose(other, reference, atol=BATCH_INVARIANCE_TOL, rtol=0)
        if i < 8:
            np.testing.assert_allclose(alone[i], reference, atol=BATCH_INVARIANCE_TOL, rtol=0)
    for j in (1, 4, 7):
        np.testing.assert_allclose(with_short_neighbours[j], together[0], atol=BATCH_INVARIANCE_TOL, rtol=0)


def test_awkward_inputs(elmo):
    assert elmo.embed([]) == []
    single = elmo.embed([["word"]])[0]
    assert single.shape == (3, 1, 32)
    long_sentence = (sentences()[0] * 20)[:400]
    assert elmo.embed([long_sentence])[0].shape == (3, 400, 32)
    long_token = "x" * 200
    clipped = elmo.embed([[long_token], ["x" * 48]])
    # both are clipped to max_characters_per_token - 2 bytes: the same input, computed in two batch rows
    np.testing.assert_allclose(clipped[0], clipped[1], atol=BATCH_INVARIANCE_TOL, rtol=0)
    intl = elmo.embed([["naïve", "café", "東京", "📱🔋", "$&@*#"]])[0]
    assert intl.shape == (3, 5, 32) and np.isfinite(intl).all()
    empty = elmo.embed([[], ["a"]], layer="elmo", pooling="mean")
    assert empty[0].shape == (32,) and not empty[0].any()


@pytest.mark.parametrize(
    "bad, message",
    [
        ("a sentence", "must be a list of token lists, got str"),
        (None, "got NoneType"),
        ([["ok"], "not a list"], "sentence 1 must be a list of tokens"),
        ([["ok", 3]], "sentence 0, token 1 must be a str, got int"),
    ],
)
def test_non_list_or_non_string_input_is_a_type_error(elmo, bad, message):
    with pytest.raises(TypeError, match=message):
        elmo.embed(bad)


def test_layers_and_pooling(elmo):
    sentence = sentences()[2]
    full = elmo.embed([sentence])[0]  # (3, n, 32)
    for index, name in enumerate(["word_emb", "lstm_outputs1", "lstm_outputs2"]):
        np.testing.assert_allclose(
            elmo.embed([sentence], layer=name)[0], full[index], atol=BATCH_INVARIANCE_TOL, rtol=0
        )
    mixed = elmo.embed([sentence], layer="elmo")[0]
    np.testing.assert_allclose(mixed, full.mean(axis=0), atol=1e-6)  # equal weights, gamma 1
    np.testing.assert_allclose(
        elmo.embed([sentence], layer="elmo", pooling="mean")[0], mixed.mean(axis=0), atol=1e-6
    )
    np.testing.assert_allclose(
        elmo.embed([sentence], layer="elmo", pooling="max")[0], mixed.max(axis=0), atol=1e-6
    )
    assert elmo.embed([sentence], layer="all", pooling="mean")[0].shape == (3, 32)
    with pytest.raises(ValueError, match="layer 'top' is not one of"):
        elmo.embed([sentence], layer="top")
    with pytest.raises(ValueError, match="pooling 'sum' is not one of"):
        elmo.embed([sentence], pooling="sum")


def test_scalar_mix_weights_gamma_and_per_sentence_layer_norm():
    from udfs.elmo.runtime import ScalarMix

    layers = np.random.default_rng(0).standard_normal((3, 5, 4)).astype(np.float32)
    mix = ScalarMix(3, weights=[0.0, np.log(2.0), np.log(3.0)], gamma=2.0)
    np.testing.assert_allclose(mix(layers), 2.0 * (layers[0] + 2 * layers[1] + 3 * layers[2]) / 6, atol=1e-6)
    normed = ScalarMix(3, layer_norm=True)(layers)
    manual = np.mean([(layer - layer.mean()) / np.sqrt(layer.var() + 1e-12) for layer in layers], axis=0)
    np.testing.assert_allclose(normed, manual, atol=1e-5)
    with pytest.raises(ValueError, match="needs 3 weights"):
        ScalarMix(3, weights=[1.0])


@pytest.mark.slow
def test_one_and_two_intra_op_threads_agree_to_the_promised_tolerance(tmp_path):
    """Thread counts change how kernels split sums, so the last bits may differ; never more than 1e-6."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    text = tmp_path / "in.txt"
    text.write_text("\n".join(" ".join(s) for s in sentences()) + "\n", encoding="utf-8")
    outputs = {}
    for threads in (1, 2):
        out = tmp_path / f"threads-{threads}.npz"
        env = {**os.environ, "TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1"}
        env.pop("KERAS_BACKEND", None)
        cmd = [sys.executable, "-m", "udfs.elmo", "embed", "--model", str(fixture_dir())]
        cmd += ["--input", str(text), "--output", str(out), "--layer", "all"]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs[threads] = np.load(out)
    assert sorted(outputs[1].files) == sorted(outputs[2].files) and len(outputs[1].files) == len(sentences())
    for name in outputs[1].files:
        np.testing.assert_allclose(outputs[2][name], outputs[1][name], atol=BATCH_INVARIANCE_TOL, rtol=0)


def test_mean_max_pooling_and_several_sets_from_one_pass(elmo):
    batch = [sentences()[2], [], sentences()[5], ["word"]]
    mixed = elmo.embed([batch[0]], layer="elmo")[0]
    both = elmo.embed([batch[0]], layer="elmo", pooling="mean_max")[0]
    assert both.shape == (64,)
    np.testing.assert_allclose(both, np.concatenate([mixed.mean(axis=0), mixed.max(axis=0)]), atol=1e-6)
    layers = elmo.embed([batch[0]], layer="all", pooling="mean_max")[0]  # three means, then three maxima
    full = elmo.embed([batch[0]])[0]
    np.testing.assert_allclose(
        layers, np.concatenate([full.mean(axis=1).reshape(-1), full.max(axis=1).reshape(-1)]), atol=1e-6
    )
    sets = [("elmo", "mean"), ("all", "max"), ("elmo", "mean_max"), ("lstm_outputs1", "none")]
    together = elmo.embed_sets(batch, sets)
    assert [len(v) for v in together] == [4] * len(batch)
    for k, (layer, pooling) in enumerate(sets):  # each set as its own call gives
        alone = elmo.embed(batch, layer=layer, pooling=pooling)
        for i in range(len(batch)):
            np.testing.assert_allclose(together[i][k], alone[i], atol=BATCH_INVARIANCE_TOL, rtol=0)
    assert together[1][2].shape == (64,) and not together[1][2].any()  # no tokens: zeros
    with pytest.raises(ValueError, match="pooling 'median' is not one of"):
        elmo.embed_sets(batch, [("elmo", "mean"), ("elmo", "median")])


def test_bfloat16_is_called_slow_only_on_cpus_without_bf16_instructions(tmp_path):
    from udfs.elmo.cpu_features import bf16_warning, cpu_flags, has_bf16, matmul_instructions

    avx2 = tmp_path / "avx2"
    avx2.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx fma avx2\n\n")
    amx = tmp_path / "amx"
    amx.write_text("processor\t: 0\nflags\t\t: avx2 fma avx512f avx512_bf16 amx_tile amx_bf16\n")
    plain, tiles = cpu_flags(avx2), cpu_flags(amx)
    assert matmul_instructions(plain) == "fma avx2"
    assert (has_bf16(plain), has_bf16(tiles), has_bf16(None)) == (False, True, None)
    note = bf16_warning("bfloat16", "CPU", plain)
    assert "no bfloat16 instructions" in note and "slower than float32" in note and "it has fma avx2" in note
    # bf16 instructions, a GPU, float32, or a system that does not say: nothing to warn about
    assert bf16_warning("bfloat16", "CPU", tiles) is None
    assert bf16_warning("bfloat16", "/GPU:0", plain) is None
    assert bf16_warning("float32", "CPU", plain) is None
    assert cpu_flags(tmp_path / "absent") is None


def test_the_bench_measures_the_precision_asked_and_names_the_cpus_instructions():
    import subprocess
    import sys

    from tests.conftest import ROOT
    from udfs.elmo.cpu_features import cpu_flags, matmul_instructions

    cmd = [sys.executable, "-m", "udfs.elmo", "bench", "--arch", "fixture", "--token-budget", "256"]
    cmd += ["--tokens", "200", "--text", "synthetic", "--precision", "bfloat16"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("CPU: ") and lines[0].endswith(matmul_instructions(cpu_flags()))
    rows = [line.split() for line in lines if line.startswith("fixture")]
    assert [row[:2] for row in rows] == [["fixture", "bfloat16"]], done.stdout
    # the recurrence alone: the batch shape it ran on, its GFLOP/s and share of the peak, the ceilings it implies
    import re

    batch, rate, share, ceiling, at_peak = rows[0][-5:]
    assert re.fullmatch(r"\d+x\d+", batch) and float(rate) > 0 and share.endswith("%"), done.stdout
    assert float(ceiling.replace(",", "")) > 0 and float(at_peak.replace(",", "")) > 0, done.stdout


def test_float32_products_are_not_rounded_to_tf32_on_a_gpu():
    """On NVIDIA GPUs since Ampere, TensorFlow, PyTorch's cuDNN convolutions and XLA round float32 products to TF32
    by default (on an H200 with PyTorch: 4.5e-4 from the reference, beyond the runtime's 1e-5). Loading a model
    turns that off for its backend; on a CPU the settings change nothing, and on a GPU ``tests/test_gpu.py`` with
    the conformance tests shows the vectors. Runs on every backend (tests/test_backends.py)."""
    from udfs.elmo import load_elmo
    from udfs.elmo.runtime import jax_matmul_precision

    exact, reduced = load_elmo(fixture_dir()), load_elmo(fixture_dir(), precision="bfloat16")
    if exact.backend == "tensorflow":
        import tensorflow as tf

        assert not tf.config.experimental.tensor_float_32_execution_enabled()
    elif exact.backend == "torch":
        import torch

        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    # JAX: set where the runtime compiles, per model: float32 in full, bfloat16 as it is
    assert (jax_matmul_precision(exact._params), jax_matmul_precision(reduced._params)) == (
        "highest",
        "default",
    )
