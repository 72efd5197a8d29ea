"""The embed worker on a real GPU: what only a machine with one can show. Elsewhere (CI) these skip and say why.

Run once per Keras backend, each in its own process (a process holds one backend, and these check the GPU memory
the process takes): ``tests/run_on_gpu.sh`` does that, and runs the runtime's conformance, invariance and token
cache tests on the GPU too (there the backend's default device is the GPU, so every promise is checked on it).
"""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from tests.elmo_fixture import REFERENCE_TOL, fixture_spec, reference_batches, reference_outputs


def gpu_memory_mib() -> tuple[int, int]:
    """GPU 0's used and total memory as the driver counts it (every process's), in MiB."""
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.used,memory.total", "--format=csv,noheader,nounits", "-i", "0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    used, total = (int(x) for x in out.split(","))
    return used, total


@pytest.fixture(scope="module")
def backend() -> str:
    from udfs.elmo.bench import gpu_names

    if not gpu_names():
        pytest.skip(
            "no NVIDIA GPU on this machine (nvidia-smi is absent or lists none): GPU tests run where one is"
        )
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def test_a_task_given_gpu_0_runs_on_it_exactly_and_takes_memory_as_it_needs(backend, capfd):
    """Spark gave the task GPU 0: the worker places its model there, says so, reproduces the reference in float32
    (not TF32) there, and has not taken the GPU's memory up front (tasks share a GPU with fractional
    ``spark.task.resource.gpu.amount``)."""
    from udfs.embed import _device_scope, get_model

    before, total = gpu_memory_mib()
    spec = fixture_spec(backend, sets=(("lstm_outputs2", "none"),), threads=0)
    model = get_model(spec, "0")
    err = capfd.readouterr().err
    assert model.device.lower().startswith(("gpu", "cuda")), (
        f"{backend} sees no GPU on this GPU machine (its device: {model.device}); is its CUDA build installed? "
        + err[-2000:]
    )
    name = {"tensorflow": "/GPU:0", "torch": "cuda:0"}.get(backend, "device 0")
    assert f"runs ELMo {model.model_id} (native) on GPU 0 ({name}), backend {backend}" in err, err[-2000:]
    assert get_model(spec, "0") is model  # loaded once per worker, reused by its later tasks
    expected = reference_outputs()
    with _device_scope(backend, "0"):
        got = model.embed(reference_batches()[0], layer="lstm_outputs2")
    for k in range(3):
        np.testing.assert_allclose(got[k], expected[k][0], atol=REFERENCE_TOL, rtol=0)
    used, _ = gpu_memory_mib()
    # JAX would take 75 % of the GPU up front, TensorFlow all of it: the worker asks both to grow as needed
    assert used - before < 0.25 * total, f"the worker took {used - before} MiB of {total} MiB"
