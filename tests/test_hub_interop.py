"""TF Hub interop on real modules: export the reference fixture, load it with hub.load, run, convert it back.

Google's module cannot be downloaded here, so these tests use modules this project exports in the same form
(same variable names, signatures and output keys), and serve one over HTTP from 127.0.0.1 for the URL form.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import tarfile
import tempfile
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from jobs import embed as embed_job
from jobs.platform.errors import ConfigError
from tests.elmo_fixture import BATCH_INVARIANCE_TOL, fixture_dir, reference_sentences
from udfs.elmo.hub_layout import ModuleVariables, check_variables, dataset_name, hub_name
from udfs.elmo.hub_to_native import convert
from udfs.elmo.model_source import kind_of, resolve
from udfs.elmo.native_to_hub import export
from udfs.elmo.options import BilmOptions, ModelFormatError

GOOGLE_OUTPUTS = {"word_emb", "lstm_outputs1", "lstm_outputs2", "elmo", "default", "sequence_len"}


def sentences() -> list[list[str]]:
    return [s.split() for group in reference_sentences() for s in group]


def datasets(path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path, "r") as fin:
        fin.visititems(
            lambda name, obj: out.__setitem__(name, obj[...]) if isinstance(obj, h5py.Dataset) else None
        )
    return out


@pytest.fixture(scope="module")
def native():
    from udfs.elmo import load_elmo

    return load_elmo(fixture_dir())


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("hub") / "fixture-module"
    diffs = export(fixture_dir(), out)
    assert max(diffs.values()) <= 1e-5, diffs
    return out


@pytest.fixture(scope="module")
def hub_runner(module_dir):
    from udfs.elmo.hub_runner import HubElmo

    return HubElmo(module_dir)


def test_the_export_loads_with_hub_load_and_has_googles_signatures_and_outputs(module_dir):
    import tensorflow as tf

    from udfs.elmo.hub_runner import import_hub

    module = import_hub().load(str(module_dir))
    assert set(module.signatures) == {"tokens", "default"}
    assert not (module_dir / "tfhub_module.pb").exists() and (module_dir / "saved_model.pb").is_file()
    out = module.signatures["tokens"](
        tokens=tf.constant(
            [["the", "cat", "is", "on", "the", "mat"], ["dogs", "are", "in", "the", "fog", ""]]
        ),
        sequence_len=tf.constant([6, 5]),
    )
    assert set(out) == GOOGLE_OUTPUTS
    assert out["word_emb"].shape == (2, 6, 16) and out["lstm_outputs1"].shape == (2, 6, 32)
    assert out["elmo"].shape == (2, 6, 32) and out["default"].shape == (2, 32)
    assert out["sequence_len"].numpy().tolist() == [6, 5]
    assert not np.any(out["elmo"].numpy()[1, 5])  # padding is zero
    np.testing.assert_allclose(out["default"].numpy()[1], out["elmo"].numpy()[1, :5].mean(axis=0), atol=1e-6)
    text = module.signatures["default"](
        tf.constant(["dogs are  in the fog"])
    )  # split on spaces, empties dropped
    np.testing.assert_allclose(text["elmo"].numpy()[0], out["elmo"].numpy()[1, :5], atol=1e-6)


def test_hub_runner_reproduces_the_native_runtime(native, hub_runner):
    batch = sentences() + [["a"], [], ["Überraschung", "😀", "x" * 80]]
    for layer in ("all", "elmo"):
        ours = native.embed(batch, layer=layer)
        theirs = hub_runner.embed(batch, layer=layer)
        for a, b in zip(ours, theirs, strict=True):
            assert a.shape == b.shape
            np.testing.assert_allclose(b, a, atol=1e-5, rtol=0)
    pooled = hub_runner.embed(batch, layer="lstm_outputs2", pooling="mean")
    np.testing.assert_allclose(
        np.stack(pooled), np.stack(native.embed(batch, layer="lstm_outputs2", pooling="mean")), atol=1e-5
    )
    assert hub_runner.dim == native.dim == 32 and hub_runner.model_id.startswith("hub-")


def test_the_default_signature_splits_text_like_our_tokens(module_dir, native):
    from udfs.elmo.hub_runner import HubElmo

    runner = HubElmo(module_dir, signature="default")
    batch = sentences()[:10]
    for a, b in zip(native.embed(batch, layer="elmo"), runner.embed(batch, layer="elmo"), strict=True):
        np.testing.assert_allclose(b, a, atol=1e-5, rtol=0)
    assert runner.model_id.endswith("-default")
    with pytest.raises(ValueError, match="signature 'nope' is not one of tokens, default"):
        HubElmo(module_dir, signature="nope")


def test_converting_the_export_back_gives_identical_weights_and_options(module_dir, native, tmp_path):
    from udfs.elmo.runtime import load_elmo

    result = convert(str(module_dir), tmp_path / "back")
    assert result.options_from == "module assets" and result.max_diff <= 1e-5
    original, back = datasets(fixture_dir() / "lm_weights.hdf5"), datasets(tmp_path / "back" / "weights.hdf5")
    assert sorted(original) == sorted(back)
    for name, value in original.items():
        # copied, not computed: the converter moves the module's variables into the hdf5 file bit for bit
        assert back[name].dtype == np.float32 and np.array_equal(back[name], value), name
    assert BilmOptions.load(tmp_path / "back" / "options.json") == BilmOptions.load(
        fixture_dir() / "options.json"
    )
    assert not (tmp_path / "back" / "scalar_mix.json").exists()  # the default mix needs none
    batch = sentences()
    for a, b in zip(native.embed(batch), load_elmo(tmp_path / "back").embed(batch), strict=True):
        np.testing.assert_allclose(b, a, atol=BATCH_INVARIANCE_TOL, rtol=0)  # same weights, separate runs


def test_a_trained_scalar_mix_survives_export_and_conversion(tmp_path):
    from udfs.elmo.hub_runner import HubElmo
    from udfs.elmo.runtime import load_elmo

    model = tmp_path / "mixed"
    shutil.copytree(fixture_dir(), model)
    (model / "scalar_mix.json").write_text(json.dumps({"weights": [0.5, -1.0, 2.0], "gamma": 0.7}))
    export(model, tmp_path / "module")
    variables = ModuleVariables.read(tmp_path / "module")
    np.testing.assert_allclose(variables.get("aggregation/weights"), [0.5, -1.0, 2.0])
    np.testing.assert_allclose(variables.get("aggregation/scaling"), [0.7])
    convert(str(tmp_path / "module"), tmp_path / "back")
    mix = json.loads((tmp_path / "back" / "scalar_mix.json").read_text())
    assert mix["weights"] == pytest.approx([0.5, -1.0, 2.0]) and mix["gamma"] == pytest.approx(0.7)
    batch = sentences()[:6]
    hub = HubElmo(tmp_path / "module").embed(batch, layer="elmo", pooling="mean")
    back = load_elmo(tmp_path / "back")
    np.testing.assert_allclose(
        np.stack(back.embed(batch, layer="elmo", pooling="mean")), np.stack(hub), atol=1e-5
    )
    plain = load_elmo(fixture_dir()).embed(batch, layer="elmo", pooling="mean")
    assert np.abs(np.stack(plain) - np.stack(hub)).max() > 1e-3  # the mix really is the module's
    assert back.model_id != load_elmo(fixture_dir()).model_id


def test_without_an_options_asset_the_options_are_inferred_and_checked(module_dir, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(module_dir, bare)
    (bare / "assets" / "elmo_options.json").unlink()
    result = convert(f"file://{bare}", tmp_path / "back")
    # shapes give the sizes; running both settled the skip connections, which shapes cannot tell
    assert result.options_from == "inferred" and result.max_diff <= 1e-5
    assert result.options == BilmOptions.from_json(
        {**json.loads((fixture_dir() / "options.json").read_text())}
    )


def test_every_model_spec_form_resolves(module_dir, tmp_path, monkeypatch, spark):
    assert resolve(str(fixture_dir())).kind == "native"
    assert resolve(str(module_dir)).kind == "hub"
    assert resolve(f"file://{module_dir}").path == str(module_dir.resolve())
    # a TF Hub handle: a compressed module served over HTTP, downloaded once into $TFHUB_CACHE_DIR
    archive = tmp_path / "served" / "elmo-fixture.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for item in module_dir.iterdir():
            tar.add(item, arcname=item.name)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(archive.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "cache"))
    url = f"http://127.0.0.1:{server.server_address[1]}/elmo-fixture.tar.gz"
    try:
        first = resolve(url)
    finally:
        server.shutdown()
    assert first.kind == "hub" and first.path.startswith(str((tmp_path / "cache").resolve()))
    assert resolve(url).path == first.path  # the server is gone: the cache answers
    # a Hadoop path (here the Hadoop local file system) is copied to local disk by the embed job (into the driver's
    # model folder under the temp folder: this test's own)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    local = Path(embed_job.copy_from_hadoop(spark, module_dir.as_uri()))
    assert kind_of(local) == "hub" and local != module_dir
    assert {p.name: p.read_bytes() for p in (local / "variables").iterdir()} == {
        p.name: p.read_bytes() for p in (module_dir / "variables").iterdir()
    }
    with pytest.raises(ModelFormatError, match="is on a remote file system; run the embed job"):
        resolve("hdfs://namenode:8020/models/elmo")
    with pytest.raises(ModelFormatError, match="cannot fetch TF Hub module http://127.0.0.1:9/none.tar.gz"):
        resolve("http://127.0.0.1:9/none.tar.gz")


def test_damaged_modules_fail_with_a_clear_message(module_dir, tmp_path):
    from udfs.elmo.hub_runner import HubElmo

    truncated = tmp_path / "truncated"
    shutil.copytree(module_dir, truncated)
    data = next((truncated / "variables").glob("variables.data-*"))
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(
        ModelFormatError, match="variables/ are damaged or truncated - fetch the module again"
    ):
        convert(str(truncated), tmp_path / "out")
    with pytest.raises(ModelFormatError, match=r"cannot load hub module .*truncated"):
        HubElmo(truncated)
    assert not (tmp_path / "out").exists()

    no_index = tmp_path / "no-index"
    shutil.copytree(module_dir, no_index)
    (no_index / "variables" / "variables.index").unlink()
    with pytest.raises(ModelFormatError, match="has no variables/variables.index: its weights are missing"):
        ModuleVariables.read(no_index)

    bad_graph = tmp_path / "bad-graph"
    shutil.copytree(module_dir, bad_graph)
    (bad_graph / "saved_model.pb").write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelFormatError, match=r"cannot load hub module .*bad-graph.* Fetch it again"):
        HubElmo(bad_graph)

    half = tmp_path / "half"
    half.mkdir()
    (half / "tfhub_module.pb").write_bytes(b"")
    with pytest.raises(
        ModelFormatError, match="tfhub_module.pb but no saved_model.pb, so the module is incomplete"
    ):
        resolve(str(half))


def test_missing_and_unknown_variables_are_listed(module_dir):
    variables = ModuleVariables.read(module_dir)
    opts = variables.stored_options()
    shapes = dict(variables.shapes)
    shapes.pop("bilm/CNN_proj/b_proj")
    shapes["bilm/something_new"] = (3,)
    shapes["bilm/Variable_3"] = (128, 64)  # a carried LSTM state of the reference graph: skipped, not unknown
    with pytest.raises(ModelFormatError) as info:
        check_variables(shapes, opts, "hub module X")
    message = str(info.value)
    assert "missing: bilm/CNN_proj/b_proj (16,); unknown: bilm/something_new (3,))." in message
    assert (
        "Expected variables: aggregation/scaling (1,), aggregation/weights (3,), bilm/CNN/W_cnn_0" in message
    )
    assert "Found: aggregation/scaling (1,)" in message


def test_name_mapping_round_trips():
    opts = BilmOptions.load(fixture_dir() / "options.json")
    from udfs.elmo.weights import expected_datasets

    for name in expected_datasets(opts):
        assert dataset_name(hub_name(name)) == name
    assert hub_name("RNN_1/RNN/MultiRNNCell/Cell0/LSTMCell/W_P_0") == (
        "bilm/RNN_1/RNN/MultiRNNCell/Cell0/rnn/lstm_cell/projection/kernel"
    )
    assert dataset_name("bilm/Variable_2") is None and dataset_name("aggregation/weights") is None


@pytest.mark.slow
def test_the_embed_stage_with_a_hub_module_matches_the_native_model(spark, module_dir, tmp_path):
    from deltalake import DeltaTable

    from tests.test_stages import AWKWARD, SENTENCES, cfg_with, clean_table

    clean = clean_table(spark, tmp_path, {**SENTENCES, **AWKWARD})
    native = embed_job.run(spark, cfg_with(), clean, str(tmp_path / "native"), str(fixture_dir()))
    hub = embed_job.run(spark, cfg_with(), clean, str(tmp_path / "hub"), f"file://{module_dir}")
    assert hub.model_id.startswith("hub-") and hub.model_id != native.model_id
    assert hub.embedded == native.embedded and hub.without_tokens == native.without_tokens == 4
    a = {r["id"]: r for r in DeltaTable(str(tmp_path / "native")).to_pyarrow_table().to_pylist()}
    b = {r["id"]: r for r in DeltaTable(str(tmp_path / "hub")).to_pyarrow_table().to_pylist()}
    assert set(a) == set(b)
    for doc_id, row in a.items():
        assert (b[doc_id]["dim"], b[doc_id]["layer"], b[doc_id]["pooling"]) == (row["dim"], "elmo", "mean")
        if row["embedding"] is None:
            assert b[doc_id]["embedding"] is None
        else:
            np.testing.assert_allclose(b[doc_id]["embedding"], row["embedding"], atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="TF Hub module, which runs on TensorFlow only"):
        embed_job.run(spark, cfg_with("embed.backend=jax"), clean, str(tmp_path / "x"), str(module_dir))
