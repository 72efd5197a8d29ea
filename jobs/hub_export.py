"""Export a native ELMo model as a TF Hub module: a TF2 SavedModel with the signatures of Google's ELMo module.

    python -m jobs.hub_export --model MODEL_DIR --output MODULE_DIR [--overwrite]

The module loads with ``hub.load(MODULE_DIR)`` (or ``hub.KerasLayer``) and no elmo-lake code; it is checked
against the native runtime before it is moved into place. Its signatures, outputs and variable names:
``udfs/elmo/native_to_hub.py``, which does the work.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jobs.platform.cli import job_parser, log, run_job
from jobs.platform.config import Config
from jobs.platform.errors import InputError
from udfs.elmo.native_to_hub import export
from udfs.elmo.options import ModelFormatError


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser("hub_export", __doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="native model directory (options.json + one .hdf5)")
    parser.add_argument("--output", required=True, help="folder to write the module to")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    def job(args: argparse.Namespace, cfg: Config) -> int:
        del cfg
        log("hub_export", f"exporting {args.model} as a TF Hub module")
        try:
            diffs = export(args.model, args.output, args.overwrite)
        except ModelFormatError as exc:
            raise InputError(f"--model {args.model}: {exc}") from None
        except FileExistsError as exc:
            raise InputError(str(exc)) from None
        worst = max(diffs.values())
        log("hub_export", "hub.load + native runtime agree: max abs diff " + f"{worst:.1e} ({_fmt(diffs)})")
        print(f"hub module: {args.output} (load with tensorflow_hub.load; signatures tokens, default)")
        return 0

    return run_job(build_parser(), argv, job)


def _fmt(diffs: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())


if __name__ == "__main__":
    sys.exit(main())
