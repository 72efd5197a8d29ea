"""Convert a TF Hub ELMo module into a native model folder (options.json + hdf5 + scalar_mix.json).

    python -m jobs.hub_convert --module SPEC --output MODEL_DIR [--options OPTIONS_JSON] [--overwrite]
                               [--no-check]

SPEC is an unpacked module folder, a file:// URL or a TF Hub handle (https://tfhub.dev/google/elmo/3, a Kaggle
Models URL; downloaded into $TFHUB_CACHE_DIR). What is read and inferred, and the check that the result
reproduces the module (unless --no-check): ``udfs/elmo/hub_to_native.py``, which does the work.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jobs.platform.cli import job_parser, log, run_job
from jobs.platform.config import Config
from jobs.platform.errors import InputError
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
