"""How well each model-selection rule chooses, over seeds of the train/validation split.

    .venv/bin/python -m benchmarks.eval_selection --out out/tweets [--seeds 5] [--folds 3]

Reads the tables a pipeline run left under --out (train_embeddings with the selection grid's sets,
train_documents, train_clean). For each seed it computes train.select's CV table on that seed's training split
(the same folds and fits as the sklearn engine), and, for judging only, the validation F1 of every (set, regParam)
cell fitted on the whole training split. It prints, per seed and as mean ± s.d., the validation F1 of the cell
each rule ('one_se', 'best') picks by each CV score ('log_loss', 'f1'), of the fixed setting the pipeline used
before selection (elmo, mean, regParam 0.01), and of the cell with the best validation F1 (an upper bound no rule
can see).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.eval_selection", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, help="a pipeline's --out folder (train.select on)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--folds", type=int, default=3)
    args = parser.parse_args(argv)

    from pyspark.sql import functions as F

    from jobs.lake.delta_tables import read_delta
    from jobs.lake.embedding_sets import embedding_set
    from jobs.learning.classifier import arrow_matrix, arrow_vector, stratified_split
    from jobs.learning.selection import (
        METRICS,
        RULES,
        candidate_sets,
        choose,
        fold_column,
        fold_scores,
        grid_scores,
        summarise,
    )
    from jobs.platform.config import load_config
    from jobs.platform.session import get_spark
    from jobs.train import embedding_keys, labelled_documents

    out = Path(args.out).resolve()
    cfg = load_config("local", ["spark.master=local[2]", "delta.engine=delta-rs", "spark.log_level=ERROR"])
    t = cfg.train
    grid = sorted(float(g) for g in t.select_grid)
    spark = get_spark(cfg)
    picks_by = [(rule, metric) for metric in METRICS for rule in RULES]
    names = [f"{rule} by {metric}" for rule, metric in picks_by]
    results = {name: [] for name in (*names, "fixed elmo/mean 0.01", "best on validation")}
    try:
        emb = read_delta(spark, str(out / "train_embeddings"), "delta-rs")
        candidates = candidate_sets(embedding_keys(emb), None, None, None, t.select_layers, t.select_poolings)
        labelled = labelled_documents(spark, cfg, str(out / "train_documents"), str(out / "train_clean"))
        sets = {}
        for key in candidates:  # each set's vectors once, in id order
            vectors = emb.where(embedding_set(key["model_id"], key["layer"], key["pooling"]))
            table = (
                labelled.join(vectors.select("id", "embedding"), "id")
                .where(F.col("embedding").isNotNull())
                .select("id", "label", "embedding")
                .orderBy("id")
                .toArrow()
            )
            sets[(key["layer"], key["pooling"], int(key["dim"]))] = (
                table.column("id").to_pylist(),
                arrow_matrix(table, "embedding"),
                arrow_vector(table, "label", np.int32),
            )
        ids = next(iter(sets.values()))[0]
        position = {doc_id: i for i, doc_id in enumerate(ids)}
        for seed in range(args.seeds):
            split = stratified_split(labelled.where(F.col("id").isin(ids)), t.validation_fraction, seed)
            folds_table = (
                split.where(~F.col("is_validation"))
                .select("id", fold_column(args.folds, seed).alias("fold"))
                .toArrow()
            )
            fold = np.full(len(ids), -1)
            for doc_id, f in zip(
                folds_table.column("id").to_pylist(), folds_table.column("fold").to_pylist(), strict=True
            ):
                fold[position[doc_id]] = f
            train, valid = fold >= 0, fold < 0
            cv, held = [], {}
            for (layer, pooling, dim), (_, x, y) in sets.items():
                scores = fold_scores(x[train], y[train], fold[train], grid, args.folds)
                # judging only: each regParam fitted on the whole training split, scored on validation
                held_scores = grid_scores(x[train], y[train], x[valid], y[valid], grid, 1e-8)
                for reg, cell, v in zip(grid, scores, held_scores, strict=True):
                    cv.append(
                        {"layer": layer, "pooling": pooling, "dim": dim, "reg_param": reg} | summarise(cell)
                    )
                    held[(layer, pooling, reg)] = v["f1"]
            line = []
            for name, (rule, metric) in zip(names, picks_by, strict=True):
                pick = choose(cv, rule, args.folds, metric)
                f1 = held[(pick["layer"], pick["pooling"], pick["reg_param"])]
                results[name].append(f1)
                line.append(f"{name} {pick['layer']}/{pick['pooling']} {pick['reg_param']:g}: {f1:.3f}")
            fixed = held.get(("elmo", "mean", 0.01))
            if fixed is not None:
                results["fixed elmo/mean 0.01"].append(fixed)
                line.append(f"fixed: {fixed:.3f}")
            top = max(held, key=held.get)
            results["best on validation"].append(held[top])
            line.append(f"best on validation {top[0]}/{top[1]} {top[2]:g}: {held[top]:.3f}")
            print(f"seed {seed}: " + "; ".join(line), flush=True)
    finally:
        spark.stop()
    for name, values in results.items():
        if values:
            v = np.array(values)
            print(
                f"{name}: validation F1 {v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f} over {len(v)} seeds"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
