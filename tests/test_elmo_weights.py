"""Weight files: the reference's layout in both directions, and errors that name the dataset and the shapes."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from tests.elmo_fixture import fixture_dir
from udfs.elmo.options import BilmOptions, ModelFormatError
from udfs.elmo.runtime import load_elmo, model_files
from udfs.elmo.weights import expected_datasets, from_params, read_weight_file, to_params, write_weight_file


def test_fixture_has_exactly_the_expected_datasets():
    opts = BilmOptions.load(fixture_dir() / "options.json")
    with h5py.File(fixture_dir() / "lm_weights.hdf5", "r") as fin:
        found = {}
        fin.visititems(
            lambda name, obj: found.update({name: obj.shape}) if isinstance(obj, h5py.Dataset) else None
        )
    assert found == expected_datasets(opts)


def test_params_round_trip_to_identical_datasets(tmp_path):
    opts = BilmOptions.load(fixture_dir() / "options.json")
    arrays = read_weight_file(fixture_dir() / "lm_weights.hdf5", opts)
    back = from_params(to_params(arrays, opts), opts)
    assert back.keys() == arrays.keys()
    for name in arrays:
        np.testing.assert_array_equal(back[name], arrays[name], err_msg=name)
    write_weight_file(tmp_path / "w.hdf5", back)
    again = read_weight_file(tmp_path / "w.hdf5", opts)
    assert all(np.array_equal(again[n], arrays[n]) for n in arrays)


def copy_model(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    shutil.copy(fixture_dir() / "options.json", target / "options.json")
    shutil.copy(fixture_dir() / "lm_weights.hdf5", target / "weights.hdf5")
    return target


def test_missing_truncated_and_mismatched_files_fail_with_names_and_shapes(tmp_path):
    model = copy_model(tmp_path)
    opts = BilmOptions.load(model / "options.json")
    with pytest.raises(ModelFormatError, match="weights file .*nope.hdf5 does not exist"):
        read_weight_file(model / "nope.hdf5", opts)

    data = (model / "weights.hdf5").read_bytes()
    (model / "weights.hdf5").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="cannot read weights file .*truncated or not HDF5"):
        read_weight_file(model / "weights.hdf5", opts)

    options = json.loads((fixture_dir() / "options.json").read_text())
    options["lstm"]["dim"] = 128
    options["char_cnn"]["n_highway"] = 3
    mismatched = BilmOptions.from_json(options)
    with pytest.raises(ModelFormatError) as info:
        read_weight_file(fixture_dir() / "lm_weights.hdf5", mismatched)
    message = str(info.value)
    assert "dataset CNN_high_2/W_carry is missing (expected shape (124, 124))" in message
    assert (
        "dataset RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/W_0 has shape (32, 256), the options imply (32, 512)"
        in message
    )


def test_options_and_model_directory_errors(tmp_path):
    with pytest.raises(ModelFormatError, match="options file .* does not exist"):
        BilmOptions.load(tmp_path / "options.json")
    (tmp_path / "options.json").write_text("{not json")
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        BilmOptions.load(tmp_path / "options.json")
    with pytest.raises(ModelFormatError, match="not a biLM options file"):
        BilmOptions.from_json({"lstm": {}})
    with pytest.raises(ModelFormatError, match="model directory .* does not exist"):
        model_files(tmp_path / "absent")
    model = copy_model(tmp_path)
    shutil.copy(model / "weights.hdf5", model / "other.hdf5")
    with pytest.raises(
        ModelFormatError, match=r"exactly one weights \.hdf5 file \(found: other.hdf5, weights.hdf5\)"
    ):
        model_files(model)


def test_model_id_follows_the_content(tmp_path):
    first = load_elmo(copy_model(tmp_path))
    again = load_elmo(fixture_dir())
    assert first.model_id == again.model_id
    arrays = read_weight_file(fixture_dir() / "lm_weights.hdf5", first.options)
    arrays["char_embed"][0, 0] += 1.0
    changed = tmp_path / "changed"
    changed.mkdir()
    shutil.copy(fixture_dir() / "options.json", changed / "options.json")
    write_weight_file(changed / "w.hdf5", arrays)
    assert load_elmo(changed).model_id != first.model_id
