"""Model selection: which embedding set (layer x pooling) and which regularisation, by k-fold CV.

The candidates are the pooled sets of one model_id in an embedding table whose layer is in
``train.select_layers`` and pooling in ``train.select_poolings``; each is tried with every regParam of
``train.select_grid``. Only the training split is used: its rows are dealt into ``train.folds`` stratified folds
by a seeded hash of the id (the same folds for every set, and for both engines), each fold is predicted by a fit
on the others, and a candidate scores the mean over the folds of its held-out log loss and of its F1 (at 0.5).
``train.select_metric`` says which score ranks: 'log_loss' (the default: a smooth score of every probability, far
less noisy between close candidates than F1, which counts only the rows that cross 0.5) or 'f1'.
``train.select_rule`` picks: 'one_se' (the default), the simplest candidate (shortest vector, then strongest
regularisation) within one standard error of the best mean; or 'best', the best mean. The validation split is
touched once, by the final fit.

Engines: scikit-learn on the driver (each set's training rows collected once, within ``train.driver_budget_mb``)
or Spark ML (each fold's scores summed by Spark, nothing collected: tables larger than the driver).
"""

from __future__ import annotations

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.learning.classifier import arrow_matrix, arrow_vector, check_driver_budget, fit_partitions
from jobs.platform.errors import InputError
from jobs.platform.session import release, reuse

CV_TOL = 1e-6  # the folds' fits stop here; the final fit goes on to the engines' own tolerance
# probabilities are clipped to [P_CLIP, 1 - P_CLIP] in the log loss (as scikit-learn's log_loss)
P_CLIP = 1e-15
# the scores each CV row holds (the folds' mean under the score's name, their s.d. under "<name>_sd"), each with
# the sign that makes larger better when train.select_metric ranks by it, and its name in the description
METRICS = {"log_loss": (-1.0, "held-out log loss"), "f1": (1.0, "F1")}


def candidate_sets(
    keys: list[dict],
    model_id: str | None,
    layer: str | None,
    pooling: str | None,
    layers: list,
    poolings: list,
) -> list[dict]:
    """The pooled sets to choose from, or an error that says what the table holds and how to embed the rest."""
    models = sorted({k["model_id"] for k in keys if model_id in (None, k["model_id"])})
    if len(models) > 1:
        raise InputError(
            f"the embeddings hold several models ({', '.join(models)}): choose one with --model-id"
        )
    wanted_layers = [layer] if layer else [str(x) for x in layers]
    wanted_poolings = [pooling] if pooling else [str(x) for x in poolings]
    found = [
        k
        for k in keys
        if k["model_id"] in models and k["layer"] in wanted_layers and k["pooling"] in wanted_poolings
    ]
    found = sorted(
        found, key=lambda k: (wanted_layers.index(k["layer"]), wanted_poolings.index(k["pooling"]))
    )
    if not found:
        held = "; ".join(f"{k['model_id']} {k['layer']} {k['pooling']}" for k in keys) or "none"
        raise InputError(
            f"no embedding set to select from: layers {', '.join(wanted_layers)} x poolings "
            f"{', '.join(wanted_poolings)} of {models[0] if models else 'any model'} (the table holds: {held}); "
            "embed them (jobs/pipeline.py does), e.g. jobs/embed.py --layer elmo --pooling mean_max, or set "
            "train.select=false"
        )
    return found


def cross_validate(
    train: DataFrame,
    embeddings: DataFrame,
    candidates: list[dict],
    grid: list[float],
    folds: int,
    engine: str,
    budget_mb: int,
    log,
) -> list[dict]:
    """One row per candidate set and regParam: mean and s.d. of the folds' F1 and log loss, with the rows used.

    ``train``: the training split's (id, label, fold); ``embeddings``: the table's rows of the chosen model.
    """
    from jobs.lake.embedding_sets import embedding_set

    grid = sorted(float(g) for g in grid)
    if not grid:
        raise InputError("train.select_grid is empty: give it at least one regParam")
    rows: list[dict] = []
    counts: dict[tuple[str, str], int] = {}
    for key in candidates:
        name = (key["layer"], key["pooling"])
        vectors = embeddings.where(embedding_set(key["model_id"], *name)).select("id", "embedding")
        data = train.join(vectors, "id").where(F.col("embedding").isNotNull())
        if engine == "sklearn":
            scores, n = _sklearn_folds(data, key["dim"], grid, folds, budget_mb)
        else:
            scores, n = _spark_folds(data, grid, folds)
        counts[name] = n
        for reg, cell in zip(grid, scores, strict=True):
            rows.append(
                {"layer": key["layer"], "pooling": key["pooling"], "dim": int(key["dim"]), "reg_param": reg}
                | summarise(cell)
                | {"rows": n}
            )
        mine = [r for r in rows if (r["layer"], r["pooling"]) == name]
        log(
            f"CV {key['layer']}/{key['pooling']} (dim {key['dim']}, {n} rows): best mean log loss "
            f"{min(r['log_loss'] for r in mine):.4f}, best mean F1 {max(r['f1'] for r in mine):.3f}"
        )
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{layer}/{pooling}: {n}" for (layer, pooling), n in counts.items())
        raise InputError(
            f"the embedding sets cover different training rows ({detail}): a set was embedded for part of the "
            "documents only; re-run the embed stage for each set (it adds only what is missing)"
        )
    return rows


RULES = ("one_se", "best")


def summarise(cell: dict[str, list[float]]) -> dict[str, float]:
    """Mean and s.d. over the folds of each score of one (set, regParam) cell."""
    out = {}
    for score in METRICS:
        out[score] = float(np.mean(cell[score]))
        out[f"{score}_sd"] = float(np.std(cell[score]))
    return out


def choose(cv: list[dict], rule: str = "one_se", folds: int = 3, metric: str = "log_loss") -> dict:
    """The chosen (set, regParam) of a CV table, ranked by ``metric`` ('log_loss': lower is better; 'f1').

    'best': the best mean (ties to the shorter vector, then the stronger regularisation). 'one_se': the simplest
    candidate — shortest vector, then strongest regularisation — whose mean is within one standard error (s.d. of
    the folds / sqrt(folds)) of the best: the differences between close candidates are mostly the folds' noise,
    and picking the largest of many noisy means picks noise (the winner's curse).
    """
    if metric not in METRICS:
        raise InputError(f"train.select_metric {metric!r} is not one of {', '.join(METRICS)}")
    if rule not in RULES:
        raise InputError(f"train.select_rule {rule!r} is not one of {', '.join(RULES)}")
    sign = METRICS[metric][0]

    def score(r: dict) -> float:
        return sign * r[metric]

    best = max(cv, key=lambda r: (round(score(r), 12), -r["dim"], r["reg_param"]))
    if rule == "best":
        return best
    floor = score(best) - best[f"{metric}_sd"] / np.sqrt(max(folds, 1))
    close = [r for r in cv if score(r) >= floor - 1e-12]
    return min(close, key=lambda r: (r["dim"], -r["reg_param"], -score(r)))


def describe(selection: dict) -> str:
    chosen = selection["chosen"]
    grid = selection["grid"]
    sets = len(selection["cv"]) // len(grid)
    edge = (
        " - the edge of train.select_grid: widen it"
        if len(grid) > 1 and chosen["reg_param"] in (min(grid), max(grid))
        else ""
    )
    metric = selection.get("metric", "f1")  # records written before train.select_metric ranked by F1
    rule = {"one_se": "the simplest within one standard error of the best", "best": "the best"}[
        selection.get("rule", "best")
    ]
    scores = f"mean F1 {chosen['f1']:.3f}"
    if "log_loss" in chosen:
        scores = f"mean log loss {chosen['log_loss']:.4f}, {scores}"
    return (
        f"layer {chosen['layer']}, pooling {chosen['pooling']}, regParam {chosen['reg_param']:g}, chosen from "
        f"{sets} embedding set{'s' if sets > 1 else ''} x {len(grid)} regParam values by "
        f"{selection['folds']}-fold CV on the training split, {rule} {METRICS[metric][1]} ({scores}){edge}"
    )


def _f1(tp: float, fp: float, fn: float) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0


def _sklearn_folds(data: DataFrame, dim: int, grid: list[float], folds: int, budget_mb: int):
    rows = data.count()
    check_driver_budget(rows, dim, budget_mb)  # before anything reaches the driver
    table = data.select("id", "label", "fold", "embedding").orderBy("id").toArrow()
    x = arrow_matrix(table, "embedding")
    y, fold = arrow_vector(table, "label", np.int32), arrow_vector(table, "fold", np.int64)
    return fold_scores(x, y, fold, grid, folds), rows


def fold_scores(
    x: np.ndarray, y: np.ndarray, fold: np.ndarray, grid: list[float], folds: int
) -> list[dict[str, list[float]]]:
    """Each regParam of ``grid``: the F1 and log loss of each fold (``grid_scores`` on the other folds' rows)."""
    scores = [{score: [] for score in METRICS} for _ in grid]
    for f in range(folds):
        fit_rows, held = fold != f, fold == f
        got_all = grid_scores(x[fit_rows], y[fit_rows], x[held], y[held], grid, CV_TOL)
        for cell, got in zip(scores, got_all, strict=True):
            for score in METRICS:
                cell[score].append(got[score])
    return scores


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean negative log-likelihood of 0/1 labels under probabilities ``p`` (clipped as the Spark engine's)."""
    p = np.clip(p, P_CLIP, 1.0 - P_CLIP)
    return float(-np.mean(np.where(y.astype(bool), np.log(p), np.log1p(-p))))


def grid_scores(
    x_fit: np.ndarray,
    y_fit: np.ndarray,
    x_held: np.ndarray,
    y_held: np.ndarray,
    grid: list[float],
    tol: float,
) -> list[dict[str, float]]:
    """F1 at 0.5 and log loss on the held-out rows of a fit for each regParam of ``grid``: scikit-learn on features
    standardised by the fitted rows, with Spark's objective (C = 1 / (regParam * rows)), the strongest
    regularisation first, each fit warm-started from the last (the same optimum, sooner)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_fit)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    x_fit, x_held = (x_fit - scaler.mean_) / scale, (x_held - scaler.mean_) / scale
    truth = y_held.astype(bool)
    model = LogisticRegression(max_iter=5000, tol=tol, warm_start=True)
    out: list[dict[str, float]] = [{} for _ in grid]
    for i in range(len(grid) - 1, -1, -1):
        model.set_params(C=1.0 / (grid[i] * len(y_fit)))
        model.fit(x_fit, y_fit)
        p = model.predict_proba(x_held)[:, 1]
        predicted = p >= 0.5
        tp, fp, fn = np.sum(predicted & truth), np.sum(predicted & ~truth), np.sum(~predicted & truth)
        out[i] = {"f1": _f1(float(tp), float(fp), float(fn)), "log_loss": log_loss(y_held, p)}
    return out


def _count(condition: Column) -> Column:
    return F.coalesce(F.sum(condition.cast("double")), F.lit(0.0))


def _spark_folds(data: DataFrame, grid: list[float], folds: int):
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.functions import array_to_vector, vector_to_array

    features = reuse(
        data.select(
            array_to_vector("embedding").alias("features"),
            F.col("label").cast("double").alias("label"),
            "fold",
        )
    )
    try:
        n = features.count()
        scores = [{score: [] for score in METRICS} for _ in grid]
        p = F.least(F.greatest(vector_to_array("probability")[1], F.lit(P_CLIP)), F.lit(1.0 - P_CLIP))
        nll = F.when(F.col("label") == 1, -F.ln(p)).otherwise(-F.log1p(-p))
        for f in range(folds):
            fit_rows = fit_partitions(features.where(F.col("fold") != f), n)
            held = features.where(F.col("fold") == f)
            for i, reg in enumerate(grid):
                lr = LogisticRegression(
                    regParam=reg, elasticNetParam=0.0, standardization=True, maxIter=500, tol=CV_TOL
                )
                counts = (
                    lr.fit(fit_rows)
                    .transform(held)
                    .select(
                        _count((F.col("prediction") == 1) & (F.col("label") == 1)).alias("tp"),
                        _count((F.col("prediction") == 1) & (F.col("label") == 0)).alias("fp"),
                        _count((F.col("prediction") == 0) & (F.col("label") == 1)).alias("fn"),
                        F.avg(nll).alias("log_loss"),
                    )
                    .collect()[0]
                )
                scores[i]["f1"].append(_f1(counts["tp"], counts["fp"], counts["fn"]))
                scores[i]["log_loss"].append(float(counts["log_loss"]))
    finally:
        release(features)
    return scores, n
