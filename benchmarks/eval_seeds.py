"""ELMo classifier vs the honest baseline, averaged over seeds of the train/validation split.

    .venv/bin/python -m benchmarks.eval_seeds --out out/tweets [--seeds 5] [--engine sklearn]
                                               [--model-id ID] [--layer elmo] [--pooling mean] [--set K=V ...]

Reads the tables a pipeline run left under --out (train_embeddings, train_documents, train_clean) and trains
once per seed (``train.seed`` = 0..N-1) with the pipeline's settings: by default ``train.select``, so each seed
chooses its embedding set and regParam by CV on its own training split, as the pipeline does. Each run reports
the validation F1 of logistic regression on the embeddings (the selected set) and of the honest baseline (TF-IDF
word 1-2-grams, sublinear tf, regParam by CV on that seed's training split), on the same rows. Prints each seed
and the mean ± standard deviation of both, and of their difference.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.eval_seeds", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, help="a pipeline's --out folder")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--engine", choices=["sklearn", "spark"], default="sklearn")
    parser.add_argument("--model-id", default=None)
    parser.add_argument("--layer", default=None)
    parser.add_argument("--pooling", default=None)
    parser.add_argument(
        "--set", action="append", default=[], help="a config override, e.g. train.select=false (repeatable)"
    )
    args = parser.parse_args(argv)

    from jobs import train
    from jobs.platform.config import load_config
    from jobs.platform.session import get_spark

    out = Path(args.out).resolve()
    base = ["spark.master=local[2]", "delta.engine=delta-rs", "spark.log_level=ERROR", *args.set]
    spark = get_spark(load_config("local", base))
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="eval-seeds-") as tmp:
            for seed in range(args.seeds):
                cfg = load_config("local", [*base, f"train.seed={seed}"])
                classifier, _ = train.run(
                    spark,
                    cfg,
                    str(out / "train_embeddings"),
                    str(out / "train_documents"),
                    f"{tmp}/classifier-{seed}",
                    args.engine,
                    f"{tmp}/runs",
                    args.model_id,
                    args.layer,
                    args.pooling,
                    str(out / "train_clean"),
                )
                m = classifier.metrics
                ours, theirs = m["validation"]["f1"], m["tfidf_baseline"]["f1"]
                rows.append((ours, theirs))
                chosen = m.get("selection") and m["selection"]["chosen"]
                picked = (
                    f" [{chosen['layer']}/{chosen['pooling']}, regParam {chosen['reg_param']:g}]"
                    if chosen
                    else ""
                )
                print(
                    f"seed {seed}: embeddings F1 {ours:.3f}{picked} {m['validation']['f1_interval']}, baseline F1 "
                    f"{theirs:.3f} (regParam {m['tfidf_baseline']['reg_param']:g}), {m['comparison']['verdict']}",
                    flush=True,
                )
    finally:
        spark.stop()
    values = np.array(rows)
    diff = values[:, 0] - values[:, 1]
    print(
        f"{args.seeds} seeds ({classifier.model_id}, "
        f"{'selected' if m.get('selection') else f'{classifier.layer}, {classifier.pooling}'}, {args.engine}): "
        f"embeddings {values[:, 0].mean():.3f} ± {values[:, 0].std(ddof=1):.3f}, honest baseline "
        f"{values[:, 1].mean():.3f} ± {values[:, 1].std(ddof=1):.3f}, difference {diff.mean():+.3f} ± "
        f"{diff.std(ddof=1):.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
