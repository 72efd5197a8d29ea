"""A TF Hub ELMo module -> a native model folder (options.json + hdf5 + scalar_mix.json); ``jobs/hub_convert.py``
is its command line.

The module's checkpoint (variables/) is read, never its graph: options.json is inferred from the variables'
shapes (names and mapping: ``hub_layout.py`` and the README), the weights are written with the reference's dataset
names, and the module's trained scalar mix (weights before the softmax, and its scale) goes to scalar_mix.json,
which the runtime uses for the 'elmo' layer. What shapes cannot tell (max characters per token, activation,
clipping, skip connections) comes from the module's assets/elmo_options.json when it has one (modules this project
exports do), else from the options given, else from the published ELMo models' values. Unless told not to, the
result is then run beside the module on probe sentences and must agree to 1e-4 (skip connections are flipped once
if that is what it takes); nothing is written otherwise, and the output folder appears only when everything is in
it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from udfs.elmo.hub_layout import (
    MIX_SCALE,
    MIX_WEIGHTS,
    ModuleVariables,
    check_variables,
    hub_name,
    infer_options,
)
from udfs.elmo.model_source import resolve
from udfs.elmo.options import BilmOptions, ModelFormatError
from udfs.elmo.weights import expected_datasets, write_weight_file

WEIGHTS_FILE = "weights.hdf5"
CHECK_TOLERANCE = 1e-4


@dataclass
class Conversion:
    output: Path
    options: BilmOptions
    options_from: str  # "module assets", "--options" or "inferred"
    max_diff: float | None  # None when not checked


def read_module(folder: str | Path, options: BilmOptions | None = None):
    """(options, where they came from, reference arrays, scalar mix weights, scale) of an unpacked module."""
    variables = ModuleVariables.read(folder)
    stored = variables.stored_options()
    opts, source = (
        (options, "--options") if options else (stored, "module assets") if stored else (None, "inferred")
    )
    opts = opts or infer_options(variables.shapes)
    check_variables(variables.shapes, opts, where=f"hub module {folder}")
    arrays = {}
    for name in expected_datasets(opts):
        value = variables.get(hub_name(name))
        if name == "char_embed" and value.shape[0] == opts.n_characters:
            value = value[1:]  # the module keeps the padding id's row; the reference file does not
        arrays[name] = value
    return opts, source, arrays, variables.get(MIX_WEIGHTS), variables.get(MIX_SCALE)


def write_model(
    folder: Path, opts: BilmOptions, arrays: dict, mix_weights: np.ndarray, scale: np.ndarray, spec: str
):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "options.json").write_text(json.dumps(opts.to_json(), indent=2), encoding="utf-8")
    write_weight_file(folder / WEIGHTS_FILE, arrays)
    weights, gamma = mix_weights.reshape(-1), float(scale.reshape(-1)[0])
    if np.ptp(weights) != 0 or gamma != 1.0:  # the default mix (equal weights, scale 1) needs no file
        mix = {"weights": [float(w) for w in weights], "gamma": gamma}
        (folder / "scalar_mix.json").write_text(json.dumps(mix, indent=2), encoding="utf-8")
    (folder / "CONVERTED_FROM").write_text(f"{spec}\n", encoding="utf-8")


def convert(
    module: str,
    output: str | Path,
    options_path: str | None = None,
    overwrite: bool = False,
    check: bool = True,
) -> Conversion:
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"--output {output} already exists; pass --overwrite to replace it")
    source = resolve(module)
    if source.kind != "hub":
        raise ModelFormatError("it is a native model already (it has options.json); nothing to convert")
    given = BilmOptions.load(options_path) if options_path else None
    opts, options_from, arrays, mix_weights, scale = read_module(source.path, given)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        write_model(staging, opts, arrays, mix_weights, scale, module)
        worst = None
        if check:
            worst, opts = _check(staging, source.path, opts, flip=options_from == "inferred")
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Conversion(output, opts, options_from, worst)


def _check(staging: Path, module_dir: str, opts: BilmOptions, flip: bool) -> tuple[float, BilmOptions]:
    """Run the converted model beside the module; with inferred options, try the other skip-connection setting."""
    from udfs.elmo.hub_agreement import compare
    from udfs.elmo.hub_runner import HubElmo
    from udfs.elmo.runtime import load_elmo

    hub = HubElmo(module_dir)
    worst = max(compare(load_elmo(staging), hub).values())
    if worst > CHECK_TOLERANCE and flip:
        other = replace(opts, use_skip_connections=not opts.use_skip_connections)
        (staging / "options.json").write_text(json.dumps(other.to_json(), indent=2), encoding="utf-8")
        flipped = max(compare(load_elmo(staging), hub).values())
        if flipped <= CHECK_TOLERANCE:
            return flipped, other
    if worst > CHECK_TOLERANCE:
        raise ModelFormatError(
            f"the converted model does not reproduce hub module {module_dir} (max abs difference {worst:.2e} > "
            f"{CHECK_TOLERANCE:g}); its options are not what the shapes suggest - pass the model's options.json "
            "with --options"
        )
    return worst, opts
