"""Reduced precision's speed-up, whole process: ``python -m udfs.elmo embed`` on real tweets, float32 vs the others.

    python -m benchmarks.bench_precision [--arch original] [--tweets 2000] [--precision float32,bfloat16]
                                         [--repeat 2]

For each architecture a model folder of random weights with the real shapes is written once, the first N tweets
of ``../shared/data/tweets/train.csv`` are written one per line (as ``benchmarks.bench_token_cache`` does), and the
embed command (``--layer elmo``, the default token cache) runs in a fresh process per precision, alternating, in
the same run. Reported: the CPU and its matrix-product instruction sets, wall seconds of each whole process
(start, imports, model load, compile, embedding, writing the .npz), tokens/s, each precision's best time against
float32's, and how far its vectors are from float32's (largest absolute difference, and the largest value).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.bench_stages import write_random_model
from benchmarks.bench_token_cache import TWEETS, run_embed, write_tweets


def largest_difference(ours: Path, reference: Path) -> tuple[float, float]:
    """The largest absolute difference between two .npz outputs' vectors, and the reference's largest value."""
    import numpy as np

    with np.load(ours) as a, np.load(reference) as b:
        diff = max(float(np.max(np.abs(a[k] - b[k]), initial=0.0)) for k in b.files)
        top = max(float(np.max(np.abs(b[k]), initial=0.0)) for k in b.files)
    return diff, top


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_precision", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--arch", default="original")
    parser.add_argument("--tweets", type=int, default=2000)
    parser.add_argument(
        "--precision", default="float32,bfloat16", help="float32 first: the others against it"
    )
    parser.add_argument("--repeat", type=int, default=2, help="runs of each precision (alternating)")
    args = parser.parse_args(argv)
    precisions = args.precision.split(",")
    if precisions[0] != "float32":
        parser.error("--precision: name float32 first (the others are compared with it)")
    if not TWEETS.is_file():
        print(f"skipped: {TWEETS} is absent (this benchmark needs the project's shared tweets)")
        return 0
    from udfs.elmo.cpu_features import cpu_flags, cpu_name, matmul_instructions

    print(f"CPU: {cpu_name()}; matrix-product instructions: {matmul_instructions(cpu_flags())}")
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
        tmp = Path(tmp)
        text = tmp / "tweets.txt"
        tokens, distinct = write_tweets(args.tweets, text)
        print(
            f"{args.tweets} tweets, {tokens:,} tokens, {distinct:,} distinct; whole process, --layer elmo, cache on"
        )
        print(f"{'arch':9} {'precision':9} {'seconds':>8} {'tokens/s':>9}")
        for arch in args.arch.split(","):
            model = tmp / arch
            write_random_model(arch, model)
            times: dict[str, list[float]] = {p: [] for p in precisions}
            for _ in range(args.repeat):
                for precision in precisions:
                    took, _ = run_embed(
                        model, text, tmp / f"{arch}-{precision}.npz", "--precision", precision
                    )
                    times[precision].append(took)
                    print(f"{arch:9} {precision:9} {took:>8.1f} {tokens / took:>9,.0f}", flush=True)
            best32 = min(times["float32"])
            for precision in precisions[1:]:
                diff, top = largest_difference(tmp / f"{arch}-{precision}.npz", tmp / f"{arch}-float32.npz")
                pairs = ", ".join(
                    f"{a / b:.2f}x" for a, b in zip(times["float32"], times[precision], strict=True)
                )
                print(
                    f"{arch:9} best of {args.repeat}: {precision} = {best32 / min(times[precision]):.2f}x float32 "
                    f"(each pair: {pairs}); "
                    f"vectors differ by at most {diff:.3g} (values up to {top:.3g})"
                )
            (model / "weights.hdf5").unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
