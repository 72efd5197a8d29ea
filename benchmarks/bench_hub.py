"""TF Hub interop benchmark: export and conversion times, hub runner vs native runtime speed and memory.

    python -m benchmarks.bench_hub [--arch small,original] [--tokens 6000] [--token-budget 2048]

For each architecture (random weights of the real shapes, a random trained scalar mix): export the native model
as a hub module, convert the module back, then embed the same synthetic tweets (layer elmo, mean pooling) with
the native runtime on the original folder, the hub runner on the module, and the native runtime on the
converted folder. Each step runs in a fresh process, so its peak memory (max RSS) is its own; load time and
tokens/s are measured separately (the first batch, which compiles, is a warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_random_model(arch: str, folder: Path) -> None:
    import numpy as np

    from udfs.elmo.bench import ARCHITECTURES
    from udfs.elmo.options import BilmOptions
    from udfs.elmo.weights import random_arrays, write_weight_file

    opts = BilmOptions.from_json(ARCHITECTURES[arch])
    folder.mkdir(parents=True)
    (folder / "options.json").write_text(json.dumps(opts.to_json()))
    write_weight_file(folder / "weights.hdf5", random_arrays(opts))
    mix = {
        "weights": [float(w) for w in np.random.default_rng(1).standard_normal(opts.n_layers + 1)],
        "gamma": 0.9,
    }
    (folder / "scalar_mix.json").write_text(json.dumps(mix))


def step(kind: str, source: str, target: str, tokens: int, budget: int) -> dict:
    """One measurement, in this (fresh) process."""
    start = time.perf_counter()
    result: dict = {"step": kind}
    if kind == "export":
        from udfs.elmo.native_to_hub import export

        diffs = export(source, target)
        result["max_diff"] = max(diffs.values())
    elif kind == "convert":
        from udfs.elmo.hub_to_native import convert

        result["max_diff"] = convert(source, target).max_diff
    else:
        from udfs.elmo.bench import synthetic_sentences
        from udfs.elmo.model_source import load_model, resolve

        model = load_model(resolve(source), budget)
        result["load_s"] = round(time.perf_counter() - start, 2)
        model.embed(synthetic_sentences(400, seed=1), layer="elmo", pooling="mean")
        sentences = synthetic_sentences(tokens)
        start = time.perf_counter()
        model.embed(sentences, layer="elmo", pooling="mean")
        took = time.perf_counter() - start
        result["tokens_per_s"] = round(sum(len(s) for s in sentences) / took, 1)
    result["seconds"] = round(time.perf_counter() - start, 2)
    result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    return result


def run_step(kind: str, source: Path, target: Path | None, args) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_hub", "--one", kind, str(source), str(target or "-")]
    cmd += ["--tokens", str(args.tokens), "--token-budget", str(args.token_budget)]
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{kind} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_hub", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--arch", default="small,original")
    parser.add_argument("--tokens", type=int, default=6000, help="tokens embedded per speed measurement")
    parser.add_argument("--token-budget", type=int, default=2048)
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        kind, source, target = args.one
        print(json.dumps(step(kind, source, target, args.tokens, args.token_budget)))
        return 0
    print(
        f"{'arch':9} {'step':16} {'seconds':>8} {'load s':>7} {'tokens/s':>9} {'max diff':>9} {'peak RSS':>8}"
    )
    for arch in args.arch.split(","):
        work = Path(tempfile.mkdtemp(prefix=f"bench-hub-{arch}-"))
        try:
            write_random_model(arch, work / "native")
            size = sum(p.stat().st_size for p in (work / "native").iterdir()) / 1e6
            rows = [
                run_step("export", work / "native", work / "module", args),
                run_step("convert", work / "module", work / "converted", args),
                {**run_step("embed", work / "native", None, args), "step": "native runtime"},
                {**run_step("embed", work / "module", None, args), "step": "hub runner"},
                {**run_step("embed", work / "converted", None, args), "step": "converted, native"},
            ]
            for r in rows:
                diff = f"{r['max_diff']:.1e}" if "max_diff" in r else ""
                speed = f"{r['tokens_per_s']:,.0f}" if "tokens_per_s" in r else ""
                print(
                    f"{arch:9} {r['step']:16} {r['seconds']:>8.1f} {r.get('load_s', ''):>7} {speed:>9} "
                    f"{diff:>9} {r['peak_rss_gb']:>6.2f}GB",
                    flush=True,
                )
            print(f"{arch:9} (native weights {size:,.0f} MB)")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
