"""ELMo runtime benchmark: tokens/s with the token cache off and on, its hit rate, peak memory, FLOP utilisation.

    python -m udfs.elmo bench [--arch fixture,small,original] [--token-budget 1024,2048,4096]
                              [--precision float32,bfloat16] [--backend tensorflow] [--tokens 20000]
                              [--text tweets|synthetic]

Each (architecture, budget) runs in a fresh process, so its peak memory (max RSS) is its own. Weights are random
with the real shapes. The text is real tweets (``../shared/data/tweets/train.csv``, split into words and
punctuation as written) when that file is there, else synthetic tweet-like sentences (random letters, so far
fewer repeated tokens than real text). The same sentences run with the token cache off, then on (starting
empty), in the same process. FLOPs per token follow ``BilmOptions.flops_per_token`` (multiply-adds x 2 of the
char CNN, highway, projection and both directions of every LSTM layer); utilisation (cache off) = FLOPs/token x
tokens/s / the peak matrix-multiply FLOP/s measured in the same process on the same backend, in float32 (so a
bfloat16 row's utilisation above 100 % is what bf16 instructions add). The first line names the CPU and the
instruction sets that decide a product's speed (AVX2/FMA, AVX-512, AVX512-BF16, AMX), and the second the
machine's NVIDIA GPUs where it has any (on a GPU, float32 means float32: the runtime turns TF32 off).

The recurrence alone (``recurrence_rate``: the biLSTM's per-step products and gate arithmetic, on the median
batch shape of the run, ``batch`` = rows x steps): ``rec GF/s``, its share of the peak (``rec/peak``), and the
ceiling it implies for the token-cache path (``ceiling``: tokens/s with the biLSTM's input projections at peak and
its recurrence at the measured rate; ``at peak``: tokens/s with all of the biLSTM at peak; "-" where the
recurrence's time is within the timings' noise, under 5 % of the layer's). Measured tokens/s with the cache on
below ``ceiling`` is time outside the biLSTM's products (batching, the token cache, copies).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from udfs.elmo.cpu_features import bf16_warning, cpu_flags, cpu_name, matmul_instructions

FILTERS = [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512], [7, 1024]]
ARCHITECTURES = {
    "fixture": {
        "lstm": {
            "cell_clip": 3,
            "use_skip_connections": False,
            "n_layers": 2,
            "proj_clip": 3,
            "projection_dim": 16,
            "dim": 64,
        },
        "char_cnn": {
            "embedding": {"dim": 4},
            "filters": [[1, 4], [2, 8], [3, 16], [4, 32], [5, 64]],
            "n_highway": 2,
            "n_characters": 262,
            "max_characters_per_token": 50,
            "activation": "relu",
        },
    },
    "small": {  # AllenNLP's elmo_2x1024_128_2048cnn_1xhighway
        "lstm": {
            "cell_clip": 3,
            "use_skip_connections": True,
            "n_layers": 2,
            "proj_clip": 3,
            "projection_dim": 128,
            "dim": 1024,
        },
        "char_cnn": {
            "embedding": {"dim": 16},
            "filters": FILTERS,
            "n_highway": 1,
            "n_characters": 262,
            "max_characters_per_token": 50,
            "activation": "relu",
        },
    },
    "original": {  # elmo_2x4096_512_2048cnn_2xhighway (the TF Hub module's architecture)
        "lstm": {
            "cell_clip": 3,
            "use_skip_connections": True,
            "n_layers": 2,
            "proj_clip": 3,
            "projection_dim": 512,
            "dim": 4096,
        },
        "char_cnn": {
            "embedding": {"dim": 16},
            "filters": FILTERS,
            "n_highway": 2,
            "n_characters": 262,
            "max_characters_per_token": 50,
            "activation": "relu",
        },
    },
}


def synthetic_sentences(n_tokens: int, seed: int = 0) -> list[list[str]]:
    """Tweet-like sentences (5-40 tokens of 2-10 letters) adding up to about ``n_tokens`` tokens."""
    import numpy as np

    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    sentences, total = [], 0
    while total < n_tokens:
        n = int(rng.integers(5, 41))
        sentences.append(["".join(rng.choice(letters, int(rng.integers(2, 11)))) for _ in range(n)])
        total += n
    return sentences


TWEETS = Path(__file__).resolve().parents[3] / "shared" / "data" / "tweets" / "train.csv"


def tweet_sentences(n_tokens: int, path: Path = TWEETS) -> list[list[str]]:
    """Real tweets in file order, split into words and punctuation, adding up to about ``n_tokens`` tokens."""
    import csv
    import re

    sentences, total = [], 0
    with open(path, encoding="utf-8", newline="") as fin:
        for row in csv.DictReader(fin):
            tokens = re.findall(r"\w+|[^\w\s]+", row["tweet"])
            if tokens:
                sentences.append(tokens)
                total += len(tokens)
            if total >= n_tokens:
                break
    return sentences


def gpu_names() -> str:
    """The machine's NVIDIA GPUs as ``nvidia-smi`` names them (with the driver's version), or "" where none."""
    import shutil

    if shutil.which("nvidia-smi") is None:
        return ""
    query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
    done = subprocess.run(query, capture_output=True, text=True)
    names = (
        [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []
    )
    return "; ".join(names)


def bench_text(kind: str, n_tokens: int) -> tuple[str, list[list[str]]]:
    if kind == "tweets" and TWEETS.is_file():
        return "tweets", tweet_sentences(n_tokens)
    return "synthetic", synthetic_sentences(n_tokens)


def peak_matmul_flops(backend: str, size: int = 2048, repeats: int = 10) -> float:
    """Best FLOP/s of a float32 size^3 matrix product on this backend."""
    import numpy as np
    from keras import ops

    a = ops.convert_to_tensor(np.random.default_rng(0).standard_normal((size, size)).astype(np.float32))
    b = ops.convert_to_tensor(np.random.default_rng(1).standard_normal((size, size)).astype(np.float32))
    if backend == "tensorflow":
        import tensorflow as tf

        matmul = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)), autograph=False)
    elif backend == "jax":
        import jax

        matmul = jax.jit(lambda x, y: (x @ y).sum())
    else:
        matmul = lambda x, y: ops.sum(ops.matmul(x, y))  # noqa: E731
    return 2 * size**3 / best_seconds(lambda: ops.convert_to_numpy(matmul(a, b)), repeats)


def best_seconds(run, repeats: int) -> float:
    """The fastest of ``repeats`` calls of ``run()``, after one call to compile and warm up."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def recurrence_rate(elmo, rows: int, steps: int, repeats: int = 5) -> dict:
    """The biLSTM recurrence alone, on one batch shape (rows x steps), both directions of every layer: its
    per-step products (state -> gates, cell -> projection) and the gate arithmetic between them.

    Timed as the project's ``bilstm_layer`` over random inputs minus the same layer's input projections (one
    product over all steps, outside the recurrence), each compiled and timed best-of-``repeats``. FLOPs are the
    recurrence's products only (2 per multiply-add), so the rate says how close the step loop comes to a
    large product's speed."""
    import numpy as np
    from keras import ops

    from udfs.elmo.bilm import bilstm_layer

    opts, dtype = elmo.options, elmo.precision
    h, s = opts.lstm_dim, opts.state_dim
    rng = np.random.default_rng(0)

    whole, projections = 0.0, 0.0
    for layer in range(opts.n_layers):
        width = opts.projection_dim if layer == 0 else s

        def lstm(p, x_f, x_b, layer=layer):
            mask = ops.ones((ops.shape(x_f)[0], ops.shape(x_f)[1], 1), dtype)
            c0 = ops.zeros((2, ops.shape(x_f)[1], h), dtype)
            m0 = ops.zeros((2, ops.shape(x_f)[1], s), dtype)
            inputs = (ops.cast(x_f, dtype), ops.cast(x_b, dtype))
            (out_f, out_b), _ = bilstm_layer(p, opts, layer, inputs, mask, c0, m0, exact_state=False)
            return (ops.sum(ops.cast(out_f, "float32")), ops.sum(ops.cast(out_b, "float32")))

        def project(p, x_f, x_b, layer=layer, width=width):
            kernels = p[f"lstm_{layer}_input_kernel"]
            out = [
                ops.matmul(ops.reshape(ops.cast(x, dtype), (-1, width)), kernels[d])
                for d, x in enumerate((x_f, x_b))
            ]
            return tuple(ops.sum(ops.cast(o, "float32")) for o in out)

        signature = [("float32", [None, None, width])] * 2
        x = [rng.standard_normal((steps, rows, width)).astype(np.float32) for _ in range(2)]
        # each returns sums, not its outputs: copying the projections' (rows x steps, 4 x dim) back to the host
        # (120 MB at 50 x 37 for the original architecture) would be timed as products, and on a GPU outweighs them
        none = (None, None)
        run_lstm = elmo.compile_on_weights(lstm, signature, (1, 1), (0, 0), none, none)
        run_projections = elmo.compile_on_weights(project, signature, (1, 1), (0, 0), none, none)
        whole += best_seconds(lambda run=run_lstm, x=x: run(*x), repeats)
        projections += best_seconds(lambda run=run_projections, x=x: run(*x), repeats)
    seconds = whole - projections
    flops = steps * rows * opts.recurrence_flops_per_token()
    # a difference within the timings' noise gives no rate: None, printed as "-" (on a GPU the products take
    # microseconds, and launching them the rest)
    separable = seconds > 0.05 * whole
    return {
        "rows": rows,
        "steps": steps,
        "seconds": round(seconds, 4),
        # unrounded: a tiny model on an eager backend (PyTorch) runs well under 0.1 GFLOP/s
        "flops_per_s": flops / seconds if separable else None,
        "flops_per_token": flops // (steps * rows),
    }


def typical_batch(sentences: list[list[str]], token_budget: int) -> tuple[int, int]:
    """The median batch's rows and padded steps, as the runtime plans the bench's sentences."""
    import statistics

    from udfs.elmo.runtime import plan_batches

    lengths = [len(s) for s in sentences]
    batches = plan_batches(lengths, token_budget)
    rows = int(statistics.median(len(b) for b in batches))
    steps = int(statistics.median(max(lengths[i] for i in b) + 2 for b in batches))
    return rows, steps


def run_one(
    arch: str, token_budget: int, n_tokens: int, text: str = "tweets", precision: str = "float32"
) -> dict:
    from udfs.elmo.options import BilmOptions
    from udfs.elmo.runtime import Elmo
    from udfs.elmo.token_cache import TokenCache
    from udfs.elmo.weights import random_arrays

    opts = BilmOptions.from_json(ARCHITECTURES[arch])
    elmo = Elmo(
        opts, random_arrays(opts), token_budget=token_budget, model_id=f"random-{arch}", precision=precision
    )
    cache = elmo.token_cache
    text, sentences = bench_text(text, n_tokens)
    tokens = sum(len(s) for s in sentences)
    warm_up = synthetic_sentences(min(n_tokens, 400), seed=1)
    timings = {}
    for label, cache_now in (("off", TokenCache(opts.projection_dim, 0)), ("on", cache)):
        elmo.token_cache = cache_now
        elmo.embed(warm_up, layer="elmo", pooling="mean")  # compile, warm up
        cache_now.clear()  # start empty, count from zero
        start = time.perf_counter()
        elmo.embed(sentences, layer="elmo", pooling="mean")
        timings[label] = time.perf_counter() - start
    on_gpu = elmo.device.lower().startswith(("gpu", "cuda"))
    peak = peak_matmul_flops(elmo.backend, 8192 if on_gpu else 2048)  # a GPU's launch costs hide a small one
    flops = opts.flops_per_token()
    recurrence = recurrence_rate(elmo, *typical_batch(sentences, token_budget))
    rate = recurrence["flops_per_s"]
    # what the cache-on path does per token: the biLSTM (input projections and recurrence); the token layer aside
    lstm_flops = opts.lstm_flops_per_token()
    return {
        "arch": arch,
        "precision": precision,
        "backend": elmo.backend,
        "device": elmo.device,
        "token_budget": token_budget,
        "text": text,
        "sentences": len(sentences),
        "tokens": tokens,
        "distinct_tokens": len({t for s in sentences for t in s}),
        "seconds_off": round(timings["off"], 3),
        "seconds_on": round(timings["on"], 3),
        "tokens_per_s_off": round(tokens / timings["off"], 1),
        "tokens_per_s": round(tokens / timings["on"], 1),
        "speedup": round(timings["off"] / timings["on"], 3),
        "hit_rate": round(cache.stats()["hit_rate"], 4),
        "cache_mb": round(cache.nbytes / (1 << 20), 1),
        "sentences_per_s": round(len(sentences) / timings["on"], 2),
        "flops_per_token": flops,
        "peak_matmul_gflops": round(peak / 1e9, 1),
        "utilisation": round(flops * tokens / timings["off"] / peak, 3),
        "recurrence": recurrence,
        "recurrence_share": round(rate / peak, 3) if rate else None,
        # tokens/s if the biLSTM's input projections ran at peak and its recurrence at the rate measured
        "ceiling_tokens_per_s": (
            round(
                1
                / (
                    (lstm_flops - recurrence["flops_per_token"]) / peak + recurrence["flops_per_token"] / rate
                ),
                1,
            )
            if rate
            else None
        ),
        "peak_tokens_per_s": round(peak / lstm_flops, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m udfs.elmo bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="fixture,small,original")
    parser.add_argument("--token-budget", default="1024,2048,4096")
    parser.add_argument(
        "--precision", default="float32", help="compute precisions, comma-separated: float32,bfloat16,float16"
    )
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    parser.add_argument("--tokens", type=int, default=20000, help="tokens embedded per measurement")
    parser.add_argument(
        "--text",
        choices=["tweets", "synthetic"],
        default="tweets",
        help="real tweets from ../shared/data/tweets (the default, when there) or synthetic sentences",
    )
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.arch, int(args.token_budget), args.tokens, args.text, args.precision)))
        return 0
    flags = cpu_flags()
    print(f"CPU: {cpu_name()}; matrix-product instructions: {matmul_instructions(flags)}")
    if gpus := gpu_names():
        print(f"GPU: {gpus} (rows whose device is a GPU ran there)")
    if (note := bf16_warning("bfloat16", flags=flags)) and "bfloat16" in args.precision:
        print(f"note: {note}")
    print(
        f"{'arch':9} {'precision':9} {'backend':10} {'device':6} {'budget':>6} {'text':9} {'tokens':>7} {'distinct':>8} "
        f"{'tok/s off':>9} {'tok/s on':>9} {'speed-up':>8} {'hit rate':>8} {'cache':>7} "
        f"{'GFLOP/tok':>9} {'peak GF/s':>9} {'util':>6} {'peak RSS':>8} {'batch':>7} {'rec GF/s':>8} "
        f"{'rec/peak':>8} {'ceiling':>8} {'at peak':>8}"
    )
    runs = [
        (arch, budget, precision)
        for arch in args.arch.split(",")
        for budget in args.token_budget.split(",")
        for precision in args.precision.split(",")
    ]
    for arch, budget, precision in runs:
        cmd = [
            sys.executable,
            "-m",
            "udfs.elmo",
            "bench",
            "--one",
            "--arch",
            arch,
            "--token-budget",
            budget,
            "--tokens",
            str(args.tokens),
            "--text",
            args.text,
            "--precision",
            precision,
        ]
        env = dict(os.environ, KERAS_BACKEND=args.backend, TF_CPP_MIN_LOG_LEVEL="2")
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            print(f"{arch} budget {budget} {precision}: failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        rate, share, ceiling = (
            r["recurrence"]["flops_per_s"],
            r["recurrence_share"],
            r["ceiling_tokens_per_s"],
        )
        rec_rate = "-" if rate is None else f"{rate / 1e9:.3g}"
        rec_share = "-" if share is None else f"{share:.1%}"
        ceiling = "-" if ceiling is None else f"{ceiling:,.0f}"
        print(
            f"{r['arch']:9} {r['precision']:9} {r['backend']:10} {r['device'][:6]:6} {r['token_budget']:>6} {r['text']:9} "
            f"{r['tokens']:>7,} {r['distinct_tokens']:>8,} {r['tokens_per_s_off']:>9,.0f} "
            f"{r['tokens_per_s']:>9,.0f} {r['speedup']:>7.2f}x {r['hit_rate']:>8.1%} "
            f"{r['cache_mb']:>5.1f}MB {r['flops_per_token'] / 1e9:>9.3f} {r['peak_matmul_gflops']:>9.1f} "
            f"{r['utilisation']:>6.1%} {r['peak_rss_gb']:>6.2f}GB "
            f"{r['recurrence']['rows']:>3}x{r['recurrence']['steps']:<3} {rec_rate:>8} {rec_share:>8} {ceiling:>8} "
            f"{r['peak_tokens_per_s']:>8,.0f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
