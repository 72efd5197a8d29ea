"""Logistic regression on embedding tables: the split, the two engines, metrics, and the saved classifier.

A saved classifier is a folder with ``classifier.json``: the weights folded into one linear function of the raw
embedding (``probability = sigmoid(embedding . weights + intercept)``), the decision threshold, the metrics and
the lineage (embedding ``model_id``, layer, pooling, cleaning fingerprint, settings). Scoring is then plain Spark
SQL, the same for both engines.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from jobs.platform.errors import ElmoLakeError, InputError
from jobs.platform.paths import local_path


def arrow_vector(table, name: str, dtype=None) -> np.ndarray:
    """A scalar column of an Arrow table as a NumPy array."""
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=dtype)


def arrow_matrix(table, name: str) -> np.ndarray:
    """A list<float> column of equal-length rows as a (rows, dim) float32 matrix."""
    values = np.asarray(table.column(name).combine_chunks().flatten(), dtype=np.float32)
    return values.reshape(table.num_rows, -1) if table.num_rows else values.reshape(0, 0)


# Spark ML's iterative fits (logistic regression's L-BFGS) run one Spark job per iteration over their input's
# partitions, and on a few thousand rows each task's start costs more than its rows: the fits read at most one
# partition per this many rows (an input with fewer partitions keeps them).
ROWS_PER_FIT_PARTITION = 10_000


def fit_partitions(df: DataFrame, rows: int) -> DataFrame:
    """``df`` (``rows`` rows) coalesced to one partition per ``ROWS_PER_FIT_PARTITION`` rows, for Spark ML's fits.
    Narrow (no shuffle); an input with fewer partitions than that is left as it is."""
    return df.coalesce(max(1, -(-rows // ROWS_PER_FIT_PARTITION)))


class DriverBudgetError(ElmoLakeError):
    """The sklearn engine would collect more to the driver than it is allowed."""


@dataclass
class Classifier:
    weights: list[float]
    intercept: float
    threshold: float
    model_id: str
    layer: str
    pooling: str
    engine: str
    reg_param: float
    clean_fingerprint: str | None = None
    metrics: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    @property
    def classifier_id(self) -> str:
        content = json.dumps(
            [self.weights, self.intercept, self.threshold, self.model_id, self.layer, self.pooling]
        )
        return "clf-" + hashlib.sha256(content.encode()).hexdigest()[:16]

    def save(self, folder: str | Path) -> None:
        folder = Path(local_path(str(folder)))
        folder.mkdir(parents=True, exist_ok=True)
        data = {"classifier_id": self.classifier_id, **asdict(self)}
        tmp = folder / "classifier.json.tmp"
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        tmp.replace(folder / "classifier.json")

    @classmethod
    def load(cls, folder: str | Path) -> Classifier:
        path = Path(local_path(str(folder))) / "classifier.json"
        if not path.is_file():
            raise InputError(f"no classifier at {folder} (expected {path}); train one with jobs/train.py")
        data = json.loads(path.read_text(encoding="utf-8"))
        data.pop("classifier_id", None)
        return cls(**data)

    def probability(self, embedding: F.Column) -> F.Column:
        """sigmoid(embedding . weights + intercept) in Spark SQL; a missing embedding counts as zeros."""
        weights = F.array(*[F.lit(float(w)) for w in self.weights])
        dot = F.aggregate(
            F.zip_with(
                F.coalesce(embedding, F.array_repeat(F.lit(0.0), len(self.weights))),
                weights,
                lambda a, b: a * b,
            ),
            F.lit(0.0).cast("double"),
            lambda acc, x: acc + x,
        )
        return F.lit(1.0) / (F.lit(1.0) + F.exp(-(dot + F.lit(float(self.intercept)))))


def check_labels(labelled: DataFrame) -> None:
    bad = labelled.where(~F.col("label").isin(0, 1)).limit(5).collect()
    if bad:
        examples = ", ".join(f"id {r['id']}: {r['label']!r}" for r in bad)
        raise InputError(
            f"labels must be 0 or 1; found other values ({examples}); fix them or leave them null"
        )


def stratified_split(labelled: DataFrame, validation_fraction: float, seed: int) -> DataFrame:
    """Adds ``is_validation``: within each label, the ids whose seeded hash ranks in the first fraction."""
    order = F.xxhash64(F.col("id"), F.lit(seed))
    rank = F.percent_rank().over(Window.partitionBy("label").orderBy(order, "id"))
    return labelled.withColumn("is_validation", rank < F.lit(validation_fraction))


def fold_column(folds: int, seed: int) -> Column:
    """Stratified fold numbers 0..folds-1: within each label, ids in a seeded hash order dealt round-robin. The
    same folds whatever the input's partitioning, for every embedding set and on both engines (the selection, the
    Spark engine's grid, the baseline)."""
    order = F.row_number().over(Window.partitionBy("label").orderBy(F.xxhash64("id", F.lit(seed)), "id"))
    return ((order - 1) % folds).cast("int")


def check_driver_budget(rows: int, dim: int, budget_mb: int) -> None:
    needed = rows * dim * 4 / 1e6
    if needed > budget_mb:
        raise DriverBudgetError(
            f"the sklearn engine would collect {rows} x {dim} float32 features ({needed:,.0f} MB) to the driver, over "
            f"train.driver_budget_mb={budget_mb}; use --engine spark (it scales), or raise the budget"
        )


def fit_sklearn(
    train: DataFrame, rows: int, dim: int, reg_param: float, budget_mb: int
) -> tuple[np.ndarray, float]:
    """Scaled logistic regression on the driver; the same objective as Spark ML's with standardization."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    check_driver_budget(rows, dim, budget_mb)
    table = train.select("embedding", "label").toArrow()
    x, y = arrow_matrix(table, "embedding"), arrow_vector(table, "label", np.int32)
    scaler = StandardScaler().fit(x)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    model = LogisticRegression(C=1.0 / (reg_param * rows), max_iter=5000, tol=1e-8)
    model.fit((x - scaler.mean_) / scale, y)
    weights = model.coef_[0] / scale  # folded back to the raw features
    intercept = float(model.intercept_[0] - np.sum(model.coef_[0] * scaler.mean_ / scale))
    return weights, intercept


def fit_spark(
    train: DataFrame, reg_param: float, grid: list[float], folds: int, seed: int, rows: int
) -> tuple[np.ndarray, float, float]:
    """Spark ML logistic regression (optionally a cross-validated grid over regParam) on ``train`` (``rows`` rows);
    scales out."""
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.ml.functions import array_to_vector
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

    features = [array_to_vector("embedding").alias("features"), F.col("label").cast("double").alias("label")]
    lr = LogisticRegression(
        regParam=reg_param, elasticNetParam=0.0, standardization=True, maxIter=500, tol=1e-8
    )
    if grid:
        # the folds of fold_column, not CrossValidator's own: it deals rows by a seeded random number drawn per
        # partition, so its folds, and the regParam it chose, changed with the input's partitioning (the shuffle
        # partitions, adaptive execution, the cluster)
        data = train.select(*features, fold_column(folds, seed).alias("fold"))
        cv = CrossValidator(
            estimator=lr,
            estimatorParamMaps=ParamGridBuilder().addGrid(lr.regParam, grid).build(),
            evaluator=BinaryClassificationEvaluator(metricName="areaUnderPR"),
            numFolds=folds,
            foldCol="fold",
        )
        model = cv.fit(fit_partitions(data, rows)).bestModel
    else:
        model = lr.fit(fit_partitions(train.select(*features), rows))
    return np.asarray(model.coefficients.toArray()), float(model.intercept), float(model.getRegParam())


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> dict:
    from sklearn.metrics import (
        average_precision_score,
        f1_score,
        precision_recall_curve,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    predicted = (probabilities >= threshold).astype(int)
    precision, recall, thresholds = precision_recall_curve(labels, probabilities)
    f1s = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1s[:-1])) if len(thresholds) else 0
    both = len(set(labels.tolist())) == 2
    return {
        "f1": float(f1_score(labels, predicted, zero_division=0)),
        "precision": float(precision_score(labels, predicted, zero_division=0)),
        "recall": float(recall_score(labels, predicted, zero_division=0)),
        "roc_auc": float(roc_auc_score(labels, probabilities)) if both else None,
        "pr_auc": float(average_precision_score(labels, probabilities)) if both else None,
        "best_threshold": float(thresholds[best]) if len(thresholds) else 0.5,
        "best_threshold_f1": float(f1s[best]) if len(thresholds) else None,
        "threshold": threshold,
        "rows": int(len(labels)),
    }
