"""How a TF Hub ELMo module stores the biLM: its variable names, their shapes, and the options they imply.

Google's module (tfhub.dev/google/elmo/2 and /3) was built from the reference graph (bilm-tf), so its checkpoint
holds the reference weights under the graph's variable names, plus the trained scalar mix:

    module variable                                               reference dataset (hdf5)
    bilm/char_embed                      (n_characters, dim)      char_embed (row 0, the padding id, not stored)
    bilm/CNN/W_cnn_{i}, b_cnn_{i}                                 CNN/W_cnn_{i}, CNN/b_cnn_{i}
    bilm/CNN_high_{i}/W_carry, b_carry, W_transform, b_transform  CNN_high_{i}/... (same names)
    bilm/CNN_proj/W_proj, b_proj                                  CNN_proj/W_proj, CNN_proj/b_proj
    bilm/RNN_{d}/RNN/MultiRNNCell/Cell{l}/rnn/lstm_cell/kernel    RNN_{d}/RNN/MultiRNNCell/Cell{l}/LSTMCell/W_0
    .../rnn/lstm_cell/bias                                        .../LSTMCell/B
    .../rnn/lstm_cell/projection/kernel                           .../LSTMCell/W_P_0
    aggregation/weights  (n_layers + 1,)                          scalar_mix.json "weights" (before softmax)
    aggregation/scaling  (1,) or ()                               scalar_mix.json "gamma"

``bilm/Variable``, ``bilm/Variable_1``, ... are the reference graph's carried LSTM states, not weights: they are
skipped. Modules this project exports use the same names (see ``native_to_hub.py``), whatever checkpoint
format holds them: a TF1 name-based checkpoint or a TF2 object-based one, whose object graph records each
variable's name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from udfs.elmo.options import BilmOptions, ModelFormatError
from udfs.elmo.weights import expected_datasets

MIX_WEIGHTS = "aggregation/weights"
MIX_SCALE = "aggregation/scaling"
OPTIONS_ASSET = "elmo_options.json"  # an exported module's options, in its assets/ folder
_STATE = re.compile(r"^bilm/Variable(_\d+)?$")
_LSTM = {"W_0": "rnn/lstm_cell/kernel", "B": "rnn/lstm_cell/bias", "W_P_0": "rnn/lstm_cell/projection/kernel"}
_LSTM_BACK = {v: k for k, v in _LSTM.items()}

# What shapes cannot tell: the published ELMo models' values (elmo_2x4096_512_2048cnn_2xhighway_options.json),
# used for a module without an options asset.
REFERENCE_SETTINGS = {
    "max_characters_per_token": 50,
    "activation": "relu",
    "cell_clip": 3.0,
    "proj_clip": 3.0,
    "use_skip_connections": True,
}


def hub_name(dataset: str) -> str:
    """Reference dataset name -> the module's variable name."""
    head, _, last = dataset.rpartition("/LSTMCell/")
    if head:
        return f"bilm/{head}/{_LSTM[last]}"
    return f"bilm/{dataset}"


def dataset_name(variable: str) -> str | None:
    """The module's variable name -> reference dataset name (None if it is not a biLM weight)."""
    if not variable.startswith("bilm/") or _STATE.match(variable):
        return None
    name = variable[len("bilm/") :]
    for suffix, short in _LSTM_BACK.items():
        if name.endswith("/" + suffix) and name.startswith("RNN_"):
            return name[: -len(suffix)] + "LSTMCell/" + short
    return name


def module_files(folder: str | Path) -> Path:
    """The checkpoint prefix of an unpacked module folder, after checking the folder looks like a SavedModel."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFormatError(f"hub module {folder} does not exist or is not a folder")
    if not (folder / "saved_model.pb").is_file() and not (folder / "saved_model.pbtxt").is_file():
        found = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise ModelFormatError(
            f"hub module {folder} has no saved_model.pb (found: {found}); is it an unpacked TF Hub module "
            "(the folder holding saved_model.pb and variables/)?"
        )
    prefix = folder / "variables" / "variables"
    if not Path(f"{prefix}.index").is_file():
        raise ModelFormatError(
            f"hub module {folder} has no variables/variables.index: its weights are missing or the download "
            "was cut short; delete it (and its TFHUB_CACHE_DIR entry) and fetch it again"
        )
    return prefix


@dataclass
class ModuleVariables:
    """The variables of a module's checkpoint, by variable name (``module/`` and ``:0`` stripped)."""

    folder: Path
    shapes: dict[str, tuple[int, ...]]
    keys: dict[str, str]  # variable name -> checkpoint key

    @classmethod
    def read(cls, folder: str | Path) -> ModuleVariables:
        import tensorflow as tf

        prefix = module_files(folder)
        try:
            reader = tf.train.load_checkpoint(str(prefix))
            key_shapes = reader.get_variable_to_shape_map()
            names = _object_graph_names(reader, key_shapes)
        except (tf.errors.OpError, ValueError, IndexError) as exc:
            raise ModelFormatError(
                f"cannot read the variables of hub module {folder}: {_first_line(exc)}; the files under "
                "variables/ are damaged or truncated - fetch the module again"
            ) from None
        keys, shapes = {}, {}
        for key, shape in key_shapes.items():
            if key == "_CHECKPOINTABLE_OBJECT_GRAPH" or (names and key not in names):
                continue
            name = _clean(names.get(key, key))
            keys[name], shapes[name] = key, tuple(int(n) for n in shape)
        variables = cls(Path(folder), shapes, keys)
        variables._reader = reader
        return variables

    def get(self, name: str) -> np.ndarray:
        import tensorflow as tf

        try:
            return np.asarray(self._reader.get_tensor(self.keys[name]), dtype=np.float32)
        except (tf.errors.OpError, ValueError, IndexError) as exc:
            raise ModelFormatError(
                f"cannot read variable {name} of hub module {self.folder}: {_first_line(exc)}; "
                "variables/variables.data-* is damaged or truncated - fetch the module again"
            ) from None

    def stored_options(self) -> BilmOptions | None:
        """The options an exported module carries in assets/, if any."""
        path = self.folder / "assets" / OPTIONS_ASSET
        return BilmOptions.load(path) if path.is_file() else None


def _object_graph_names(reader, key_shapes: dict) -> dict[str, str]:
    """TF2 checkpoints are keyed by object path; their object graph records each variable's own name."""
    if "_CHECKPOINTABLE_OBJECT_GRAPH" not in key_shapes:
        return {}
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    return {
        attr.checkpoint_key: attr.full_name
        for node in graph.nodes
        for attr in node.attributes
        if attr.name == "VARIABLE_VALUE"
    }


def _clean(name: str) -> str:
    name = name.removeprefix("module/")
    return name[:-2] if name.endswith(":0") else name


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def infer_options(shapes: dict[str, tuple[int, ...]], settings: dict | None = None) -> BilmOptions:
    """Options from the variables' shapes; what shapes cannot tell comes from ``settings`` (reference values)."""
    settings = {**REFERENCE_SETTINGS, **(settings or {})}
    problems = []

    def shape(name: str) -> tuple[int, ...] | None:
        return shapes.get(name)

    embed = shape("bilm/char_embed")
    if embed is None or len(embed) != 2:
        raise ModelFormatError(_listing("no bilm/char_embed (n_characters, dim) variable", shapes))
    filters = []
    while (w := shape(f"bilm/CNN/W_cnn_{len(filters)}")) is not None:
        if len(w) != 4:
            problems.append(f"bilm/CNN/W_cnn_{len(filters)} has shape {w}, expected (1, width, dim, filters)")
            break
        filters.append((w[1], w[3]))
    n_highway = 0
    while shape(f"bilm/CNN_high_{n_highway}/W_carry") is not None:
        n_highway += 1
    n_layers = 0
    while shape(hub_name(f"RNN_0/RNN/MultiRNNCell/Cell{n_layers}/LSTMCell/W_0")) is not None:
        n_layers += 1
    if not filters or not n_layers:
        raise ModelFormatError(
            _listing("no char CNN (bilm/CNN/W_cnn_0) or no LSTM (bilm/RNN_0/.../Cell0) variables", shapes)
        )
    kernel = shape(hub_name("RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/W_0"))
    lstm_dim = kernel[1] // 4
    projection = shape(hub_name("RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/W_P_0"))
    state_dim = projection[1] if projection else lstm_dim
    cnn_proj = shape("bilm/CNN_proj/W_proj")
    projection_dim = cnn_proj[1] if cnn_proj else sum(n for _, n in filters)
    if kernel[0] != projection_dim + state_dim:
        problems.append(
            f"the first LSTM's kernel {kernel} does not fit a token embedding of {projection_dim} plus a state "
            f"of {state_dim}"
        )
    if projection and projection_dim != state_dim:
        problems.append(f"the char CNN projects to {projection_dim} but the LSTM to {state_dim}")
    if problems:
        raise ModelFormatError("hub module variables are inconsistent: " + "; ".join(problems))
    if not projection:
        projection_dim = max(
            projection_dim, lstm_dim
        )  # no LSTM projection: options say projection_dim >= dim
    return BilmOptions.from_json(
        {
            "lstm": {
                "cell_clip": settings["cell_clip"],
                "use_skip_connections": settings["use_skip_connections"],
                "n_layers": n_layers,
                "proj_clip": settings["proj_clip"],
                "projection_dim": projection_dim,
                "dim": lstm_dim,
            },
            "char_cnn": {
                "embedding": {"dim": embed[1]},
                "filters": [list(f) for f in filters],
                "n_highway": n_highway,
                "n_characters": 262,
                "max_characters_per_token": settings["max_characters_per_token"],
                "activation": settings["activation"],
            },
        },
        source="options inferred from the hub module's variables",
    )


def expected_variables(opts: BilmOptions) -> dict[str, tuple[int, ...]]:
    """Every variable a module of ``opts`` holds, by name, with its shape (the scalar mix's scale: (1,) or ())."""
    shapes = {hub_name(name): shape for name, shape in expected_datasets(opts).items()}
    shapes["bilm/char_embed"] = (opts.n_characters, opts.char_embed_dim)
    shapes[MIX_WEIGHTS] = (opts.n_layers + 1,)
    shapes[MIX_SCALE] = (1,)
    return shapes


def check_variables(found: dict[str, tuple[int, ...]], opts: BilmOptions, where: str) -> None:
    """Every expected variable present with its shape, nothing unknown; else one error listing both sides."""
    expected = expected_variables(opts)
    missing = [f"{n} {s}" for n, s in expected.items() if n not in found]
    unknown = [f"{n} {s}" for n, s in found.items() if n not in expected and not _STATE.match(n)]
    wrong = [
        f"{n} is {found[n]}, expected {s}"
        for n, s in expected.items()
        if n in found and found[n] != s and not (n == MIX_SCALE and found[n] == ())
    ]
    if "bilm/char_embed" in found and found["bilm/char_embed"] == (
        opts.n_characters - 1,
        opts.char_embed_dim,
    ):
        wrong = [w for w in wrong if not w.startswith("bilm/char_embed ")]  # stored without the padding row
    if missing or unknown or wrong:
        parts = []
        if missing:
            parts.append("missing: " + ", ".join(missing))
        if unknown:
            parts.append("unknown: " + ", ".join(unknown))
        if wrong:
            parts.append("wrong shape: " + ", ".join(wrong))
        raise ModelFormatError(
            f"{where} is not an ELMo module this project can convert ({'; '.join(parts)}). "
            f"Expected variables: {_names(expected)}. Found: {_names(found)}"
        )


def _names(shapes: dict[str, tuple[int, ...]]) -> str:
    return ", ".join(f"{n} {tuple(s)}" for n, s in sorted(shapes.items()))


def _listing(what: str, shapes: dict[str, tuple[int, ...]]) -> str:
    return f"{what}; found variables: {_names(shapes) or 'none'}"
