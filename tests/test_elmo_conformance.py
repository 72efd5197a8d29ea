"""The runtime reproduces the reference implementation's outputs on its own test fixture."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.elmo_fixture import REFERENCE_TOL, fixture_dir, reference_batches, reference_outputs

TOLERANCE = REFERENCE_TOL


@pytest.fixture(scope="module", params=["token cache on", "token cache off"])
def elmo(request):
    """The fixture model, with the token cache on (the default) and off: every promise holds either way."""
    from udfs.elmo import load_elmo

    return load_elmo(fixture_dir(), token_cache_mb=-1 if request.param == "token cache on" else 0)


def test_stateful_runs_reproduce_all_ten_reference_batches(elmo):
    expected = reference_outputs()
    out = elmo.embed_stateful(reference_batches(), layer="lstm_outputs2")
    for i in range(10):
        for k in range(3):
            assert out[i][k].shape == expected[k][i].shape
            np.testing.assert_allclose(out[i][k], expected[k][i], atol=TOLERANCE, rtol=0)


def test_stateless_runs_reproduce_the_first_batch_and_only_it(elmo):
    expected = reference_outputs()
    batches = reference_batches()
    first = elmo.embed(batches[0], layer="lstm_outputs2")
    for k in range(3):
        np.testing.assert_allclose(first[k], expected[k][0], atol=TOLERANCE, rtol=0)
    # later reference batches carried state over, so a fresh start must differ from them
    later = elmo.embed(batches[1], layer="lstm_outputs2")
    assert np.abs(later[0] - expected[0][1]).max() > 1e-3


def test_all_layers_have_the_reference_shapes(elmo):
    out = elmo.embed(reference_batches()[0], layer="all")
    n_tokens = [len(s) for s in reference_batches()[0]]
    assert [o.shape for o in out] == [(3, n, 32) for n in n_tokens]
    # layer 0 is the token representation duplicated for both directions: a copy, so bitwise equal
    np.testing.assert_array_equal(out[0][0][:, :16], out[0][0][:, 16:])
    assert elmo.model_id.startswith("elmo-") and elmo.dim == 32


def installed_backends():
    names = ["tensorflow", "jax", "torch"]
    return [
        pytest.param(
            n, marks=pytest.mark.skipif(importlib.util.find_spec(n) is None, reason=f"{n} is not installed")
        )
        for n in names
    ]


@pytest.mark.slow
@pytest.mark.parametrize("backend", installed_backends())
def test_command_line_stateful_conformance_on_every_installed_backend(backend, tmp_path):
    batches = reference_batches()
    lines = [" ".join(sentence) for batch in batches for sentence in batch]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.npz"
    cmd = [
        sys.executable,
        "-m",
        "udfs.elmo",
        "embed",
        "--model",
        str(fixture_dir()),
        "--input",
        str(tmp_path / "in.txt"),
        "--output",
        str(out),
        "--stateful",
        "--batch-size",
        "3",
        "--backend",
        backend,
    ]
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"backend {backend}" in done.stderr
    expected = reference_outputs()
    result = np.load(out)
    assert sorted(result.files, key=int) == [str(i) for i in range(30)]
    for i in range(10):
        for k in range(3):
            got = result[str(3 * i + k)]
            assert got.dtype == np.float32 and got.shape == (3, expected[k][i].shape[0], 32)
            np.testing.assert_allclose(got[2], expected[k][i], atol=TOLERANCE, rtol=0)
