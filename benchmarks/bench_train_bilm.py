"""Benchmark: biLM training throughput (tokens/s, both directions counted) with the default training settings.

.venv/bin/python -m benchmarks.bench_train_bilm [--steps 60] [--set train_bilm.lstm_dim=1024 ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from jobs.learning.bilm_training import BilmTrainer, build_vocabulary, tokens_per_step
from jobs.platform.config import load_config
from jobs.train_bilm import train_settings
from udfs.elmo.bench import synthetic_sentences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    settings = train_settings(load_config("local", args.set))
    sentences = synthetic_sentences(200_000)
    counts: dict[str, int] = {}
    for s in sentences:
        for w in s:
            counts[w] = counts.get(w, 0) + 1
    trainer = BilmTrainer(settings, build_vocabulary(counts, settings.vocab_size))
    warm = 5
    trainer.run_epoch(sentences, 0, 0, lambda *a: None, None, total_steps=warm)
    start = time.perf_counter()
    trainer.run_epoch(sentences, 0, warm, lambda *a: None, None, total_steps=warm + args.steps)
    took = time.perf_counter() - start
    rate = args.steps * tokens_per_step(settings) / took
    import keras

    print(f"machine: {platform.node()}, {os.cpu_count()} cores; backend {keras.backend.backend()}")
    print(
        f"biLM training (lstm {settings.lstm_dim}, projection {settings.projection_dim}, {settings.n_layers} layers, "
        f"vocabulary {settings.vocab_size}, batch {settings.batch_size} x {settings.unroll_steps} steps): "
        f"{rate:,.0f} tokens/s ({args.steps} steps in {took:.1f} s)"
    )


if __name__ == "__main__":
    main()
