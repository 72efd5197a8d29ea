"""Model specs: what a user may name as the ELMo model, resolved to a local folder and the runner that reads it.

A spec is one of
  - a native model folder: ``options.json`` + one ``.hdf5`` (AllenNLP / bilm-tf / this project's own);
  - an unpacked TF Hub module folder: ``saved_model.pb`` + ``variables/`` (TF1 hub format or TF2 SavedModel);
  - ``file:///path`` of either;
  - a TF Hub handle: ``https://tfhub.dev/google/elmo/3``, a Kaggle Models URL, any ``http(s)://`` .tar.gz, or
    ``gs://.../*.tar.gz``: downloaded and unpacked once by ``tensorflow_hub`` into ``$TFHUB_CACHE_DIR``
    (default: a ``tfhub_modules`` folder in the system's temp folder), then read from there;
  - ``dbfs:/path``: read through Databricks' ``/dbfs`` mount when there is one;
  - any other ``scheme://`` path (``hdfs://``, ``s3a://``, ``abfss://``, ...): copied to local disk by the
    caller's ``fetch`` (the embed job copies with Spark's Hadoop file system).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from udfs.elmo.options import ModelFormatError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


@dataclass(frozen=True)
class ModelSource:
    spec: str  # as the user wrote it
    kind: str  # "native" or "hub"
    path: str  # a local folder


def resolve(spec: str, fetch: Callable[[str], str] | None = None) -> ModelSource:
    """The local folder a spec names, and its kind; a ModelFormatError says what is wrong and what to do."""
    spec = str(spec).strip()
    if not spec:
        raise ModelFormatError("no ELMo model given (an empty spec)")
    match = _SCHEME.match(spec)
    scheme = match.group(1).lower() if match and ("://" in spec or spec.lower().startswith("dbfs:")) else ""
    if scheme == "file":
        path = urllib.parse.unquote(urllib.parse.urlparse(spec).path)
    elif scheme in ("http", "https") or (scheme == "gs" and spec.endswith((".tar", ".tar.gz", ".tgz"))):
        path = download(spec)
    elif scheme == "dbfs":
        mounted = Path("/dbfs") / spec[len("dbfs:") :].lstrip("/")
        path = str(mounted) if mounted.exists() else _fetch(spec, fetch)
    elif scheme:
        path = _fetch(spec, fetch)
    else:
        path = spec
    return ModelSource(spec, kind_of(path, spec), str(Path(path).resolve()))


def kind_of(path: str | Path, spec: str | None = None) -> str:
    """'native' for options.json + .hdf5, 'hub' for saved_model.pb; otherwise an error naming what was found."""
    folder = Path(path)
    named = f"{spec} ({folder})" if spec and spec != str(path) else str(folder)
    if not folder.is_dir():
        raise ModelFormatError(
            f"model {named} does not exist or is not a folder; give a native model folder (options.json and "
            "one .hdf5), an unpacked TF Hub module folder (saved_model.pb and variables/), or a TF Hub URL"
        )
    if (folder / "options.json").is_file():
        return "native"
    if (folder / "saved_model.pb").is_file() or (folder / "saved_model.pbtxt").is_file():
        return "hub"
    found = ", ".join(sorted(p.name for p in folder.iterdir())[:12]) or "nothing"
    hint = (
        "; it has tfhub_module.pb but no saved_model.pb, so the module is incomplete - fetch it again"
        if (folder / "tfhub_module.pb").is_file()
        else ""
    )
    raise ModelFormatError(
        f"model {named} is neither a native model (options.json + .hdf5) nor a TF Hub module "
        f"(saved_model.pb + variables/); found: {found}{hint}"
    )


def download(handle: str) -> str:
    """A hub handle's local folder: ``tensorflow_hub`` downloads it once into $TFHUB_CACHE_DIR and reuses it."""
    from udfs.elmo.hub_runner import import_hub

    hub = import_hub()
    try:
        return hub.resolve(handle)
    except Exception as exc:  # urllib, TF and tarfile errors alike
        raise ModelFormatError(
            f"cannot fetch TF Hub module {handle}: {type(exc).__name__}: {str(exc).strip()[:300]}. Without network "
            "access, download and unpack it elsewhere and pass the folder (or set TFHUB_CACHE_DIR to a cache "
            "that already holds it)"
        ) from None


def _fetch(spec: str, fetch: Callable[[str], str] | None) -> str:
    if fetch is None:
        raise ModelFormatError(
            f"model {spec} is on a remote file system; run the embed job (it copies the folder with Spark's "
            "Hadoop file system) or copy the folder to local disk and pass its path"
        )
    return fetch(spec)


def load_model(
    source: ModelSource,
    token_budget: int,
    signature: str = "tokens",
    max_rows: int | None = None,
    model_id: str | None = None,
    token_cache_mb: float | None = -1,
    precision: str = "float32",
):
    """The runner for a resolved source: the native runtime, or the hub runner (TensorFlow only).

    ``model_id``: the id the driver already computed, so the model's files are not hashed again;
    ``token_cache_mb`` and ``precision``: the native runtime's (a hub module runs its own graph in float32).
    """
    if source.kind == "hub":
        if precision != "float32":
            raise ModelFormatError(
                f"precision {precision} needs the native runtime; TF Hub module {source.spec} runs its own graph "
                "in float32. Convert it first (python -m jobs.hub_convert --module SPEC --output DIR)"
            )
        from udfs.elmo.hub_runner import HubElmo

        return HubElmo(
            source.path, signature=signature, token_budget=token_budget, model_id=model_id, max_rows=max_rows
        )
    from udfs.elmo.runtime import load_elmo

    model = load_elmo(
        source.path,
        token_budget=token_budget,
        model_id=model_id,
        token_cache_mb=token_cache_mb,
        precision=precision,
    )
    model.max_rows = max_rows
    return model
