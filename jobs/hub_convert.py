"""Convert a TF Hub ELMo module into a native model folder (options.json + hdf5 + scalar_mix.json).

    python -m jobs.hub_convert --module SPEC --output MODEL_DIR [--options OPTIONS_JSON] [--overwrite]
                               [--no-check]

SPEC is an unpacked module folder, a file:// URL or a TF Hub handle (https://tfhub.dev/google/elmo/3, a Kaggle
Models URL; downloaded into $TFHUB_CACHE_DIR). The module's checkpoint (variables/) is read, never its graph:
options.json is inferred from the variables' shapes (names and mapping: udfs/elmo/hub_layout.py and the README),
the weights are written with the reference's dataset names, and the module's trained scalar mix (weights before
the softmax, and its scale) goes to scalar_mix.json, which the runtime uses for the 'elmo' layer. What shapes
cannot tell (max characters per token, activation, clipping, skip connections) comes from the module's
assets/elmo_options.json when it has one (modules this project exports do), else from --options, else from the
published ELMo models' values. Unless --no-check, the result is then run beside the module on probe sentences
and must agree to 1e-4 (skip connections are flipped once if that is what it takes); nothing is written
otherwise, and the output folder appears only when everything is in it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jobs.cli import job_parser, log, run_job
from jobs.config import Config
from jobs.errors import InputError
from udfs.elmo.hub_to_native import convert
from udfs.elmo.options import ModelFormatError


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser("hub_convert", __doc__.split("\n\n")[0])
    parser.add_argument("--module", required=True, help="hub module: folder, file:// URL or TF Hub handle")
    parser.add_argument("--output", required=True, help="native model folder to write")
    parser.add_argument("--options", default=None, help="options.json to use instead of inferring one")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    parser.add_argument(
        "--no-check", action="store_true", help="do not run the result beside the module before writing it"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    def job(args: argparse.Namespace, cfg: Config) -> int:
        del cfg
        log("hub_convert", f"reading the variables of {args.module}")
        try:
            result = convert(args.module, args.output, args.options, args.overwrite, not args.no_check)
        except ModelFormatError as exc:
            raise InputError(f"--module {args.module}: {exc}") from None
        except FileExistsError as exc:
            raise InputError(str(exc)) from None
        checked = (
            "not checked" if result.max_diff is None else f"agrees with the module to {result.max_diff:.1e}"
        )
        log("hub_convert", f"options {result.options_from}; {checked}")
        files = ", ".join(sorted(p.name for p in result.output.iterdir()))
        print(f"native model: {result.output} ({files})")
        return 0

    return run_job(build_parser(), argv, job)


if __name__ == "__main__":
    sys.exit(main())
