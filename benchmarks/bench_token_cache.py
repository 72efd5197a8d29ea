"""The token cache's speed-up, whole process: ``python -m udfs.elmo embed`` on real tweets, cache off vs on.

    python -m benchmarks.bench_token_cache [--arch original,small] [--tweets 2000] [--repeat 1]

For each architecture a model folder of random weights with the real shapes is written once, the first N tweets
of ``../shared/data/tweets/train.csv`` are written one per line (words and punctuation as written, split by
spaces), and the embed command runs in a fresh process with ``--token-cache-mb 0`` and with the default cache,
alternating, in the same run. Reported: wall seconds of each whole process (start, imports, model load, compile,
embedding, writing the .npz), tokens/s, the ratio, and the cache's hit rate from the command's last line.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_stages import write_random_model

ROOT = Path(__file__).resolve().parent.parent
TWEETS = ROOT.parent / "shared" / "data" / "tweets" / "train.csv"


def write_tweets(n: int, path: Path) -> tuple[int, int]:
    """The first ``n`` tweets with tokens, one per line; returns (tokens, distinct tokens)."""
    import csv

    lines, vocabulary = [], set()
    with open(TWEETS, encoding="utf-8", newline="") as fin:
        for row in csv.DictReader(fin):
            tokens = re.findall(r"\w+|[^\w\s]+", row["tweet"])
            if tokens:
                lines.append(" ".join(tokens))
                vocabulary.update(tokens)
            if len(lines) == n:
                break
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return sum(len(line.split()) for line in lines), len(vocabulary)


def run_embed(model: Path, text: Path, out: Path, *options: str) -> tuple[float, str]:
    """``python -m udfs.elmo embed --layer elmo`` of ``text`` in a fresh process, with ``options`` added: its
    seconds and the last line it printed."""
    cmd = [
        sys.executable,
        "-m",
        "udfs.elmo",
        "embed",
        "--model",
        str(model),
        "--input",
        str(text),
        "--output",
        str(out),
        "--layer",
        "elmo",
        *options,
    ]
    start = time.perf_counter()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"embed {' '.join(options)} failed: {done.stderr[-2000:]}")
    return took, done.stderr.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_token_cache", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--arch", default="original,small")
    parser.add_argument("--tweets", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each setting (alternating off, on)")
    args = parser.parse_args(argv)
    if not TWEETS.is_file():
        print(f"skipped: {TWEETS} is absent (this benchmark needs the project's shared tweets)")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-token-cache-") as tmp:
        tmp = Path(tmp)
        text = tmp / "tweets.txt"
        tokens, distinct = write_tweets(args.tweets, text)
        print(f"{args.tweets} tweets, {tokens:,} tokens, {distinct:,} distinct; whole process, --layer elmo")
        print(f"{'arch':9} {'cache':6} {'seconds':>8} {'tokens/s':>9} {'speed-up':>8}  last line")
        for arch in args.arch.split(","):
            model = tmp / arch
            write_random_model(arch, model)
            times: dict[str, list[float]] = {"off": [], "on": []}
            for _ in range(args.repeat):
                for label, cache_mb in (("off", 0), ("on", -1)):
                    took, last = run_embed(model, text, tmp / "out.npz", "--token-cache-mb", str(cache_mb))
                    times[label].append(took)
                    hit = re.search(r"hit rate ([\d.]+%)", last)
                    speedup = f"{min(times['off']) / took:7.2f}x" if label == "on" else ""
                    print(
                        f"{arch:9} {label:6} {took:>8.1f} {tokens / took:>9,.0f} {speedup:>8}  "
                        f"{hit.group(0) if hit else 'cache off'}",
                        flush=True,
                    )
            print(
                f"{arch:9} best of {args.repeat}: cache on = {min(times['off']) / min(times['on']):.2f}x cache off"
            )
            (model / "weights.hdf5").unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
