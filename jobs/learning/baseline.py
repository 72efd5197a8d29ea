"""The honest baseline and the uncertainty of a validation F1.

The baseline is what a data scientist tries first on short texts: TF-IDF of word 1-2-grams with sublinear tf
(1 + ln tf), then logistic regression whose regularisation is chosen by stratified k-fold cross-validation on the
training split only (the validation split is touched once, at the end). It runs on either engine: scikit-learn
on the driver, or Spark ML (hashed 1-2-grams, 2^18 features unless told otherwise) with the same folds and grid,
scaling with the cluster. Its input is the clean stage's tokens when a clean table is given (the same text the
embeddings saw), else the raw text, lowercased and split into words.

A validation F1 on 1,000 rows moves by about ±0.02 with the rows drawn, so it is reported with a 95 % bootstrap
interval, and two classifiers scored on the same rows are compared by the bootstrap interval of their
difference (paired: both are scored on each resample).
"""

from __future__ import annotations

from functools import partial

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.platform.session import release, reuse

CLEAN_PATTERN = r"\S+"  # clean tokens joined by spaces
RAW_PATTERN = r"[\w#@$&*']+"  # words of raw text
HASH_FEATURES = 1 << 18
BOOTSTRAP_SAMPLES = 1000


def describe(result: dict) -> str:
    grid = [c["reg_param"] for c in result.get("cv", [])]
    edge = (
        " - the edge of train.tfidf_grid: widen it"
        if len(grid) > 1 and result["reg_param"] in (min(grid), max(grid))
        else ""
    )
    return (
        f"TF-IDF word 1-2-grams of the {result['text']}, sublinear tf, logistic regression, regParam "
        f"{result['reg_param']:g} by {result['folds']}-fold CV{edge}"
    )


def tfidf_baseline(
    train: DataFrame,
    validation: DataFrame,
    engine: str,
    grid: list[float],
    folds: int,
    seed: int,
    clean_text: bool,
    features: int = HASH_FEATURES,
) -> dict:
    """Metrics of the baseline on ``validation`` (columns id, text, label), fitted on ``train``.

    Returns ``binary_metrics`` plus ``reg_param`` (chosen), ``cv`` (mean F1 per regParam), ``folds``, ``text``,
    ``features`` (the Spark engine's hashed feature space; None for sklearn) and ``scores``: validation ids,
    labels and probabilities (for the paired comparison), sorted by id.
    """
    from jobs.learning.classifier import binary_metrics

    pattern = CLEAN_PATTERN if clean_text else RAW_PATTERN
    fit = partial(_spark, num_features=features) if engine == "spark" else _sklearn
    reg, cv, ids, labels, probabilities = fit(
        train, validation, sorted(grid), folds, seed, pattern, not clean_text
    )
    result = binary_metrics(labels, probabilities)
    result.update(
        reg_param=reg,
        cv=[{"reg_param": r, "f1": f} for r, f in cv],
        folds=folds,
        text="clean tokens" if clean_text else "raw text",
        engine=engine,
        features=features if engine == "spark" else None,
        scores={"ids": ids, "labels": labels, "probabilities": probabilities},
    )
    result["f1_interval"] = bootstrap_f1(labels, probabilities, seed=seed)
    return result


def _fold_of(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Stratified fold numbers: within each label, rows dealt round-robin in a seeded random order."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), np.int64)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        fold[rng.permutation(rows)] = np.arange(len(rows)) % folds
    return fold


def _best(cv: list[tuple[float, float]]) -> float:
    """The regParam with the best mean F1; ties go to the stronger regularisation."""
    return max(cv, key=lambda rf: (round(rf[1], 12), rf[0]))[0]


def _sklearn(train, validation, grid, folds, seed, pattern, lowercase):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    def collect(df):
        table = df.select("id", "text", "label").orderBy("id").toArrow()
        texts = [t or "" for t in table.column("text").to_pylist()]
        return table.column("id").to_pylist(), texts, np.asarray(table.column("label").to_pylist(), np.int64)

    _, texts, y = collect(train)
    ids_v, texts_v, y_v = collect(validation)
    texts = np.asarray(texts, dtype=object)

    def fit(rows, reg):
        vectorizer = TfidfVectorizer(
            ngram_range=(1, 2), sublinear_tf=True, token_pattern=pattern, lowercase=lowercase
        )
        x = vectorizer.fit_transform(texts[rows])
        # Spark's objective (mean loss + regParam/2 |w|^2) is scikit-learn's with C = 1 / (regParam * rows)
        model = LogisticRegression(C=1.0 / (reg * len(rows)), max_iter=5000, tol=1e-8).fit(x, y[rows])
        return vectorizer, model

    fold = _fold_of(y, folds, seed)
    cv = []
    for reg in grid:
        scores = []
        for f in range(folds):
            vectorizer, model = fit(np.flatnonzero(fold != f), reg)
            held = np.flatnonzero(fold == f)
            scores.append(
                f1_score(y[held], model.predict(vectorizer.transform(texts[held])), zero_division=0)
            )
        cv.append((reg, float(np.mean(scores))))
    reg = _best(cv)
    vectorizer, model = fit(np.arange(len(y)), reg)
    probabilities = model.predict_proba(vectorizer.transform(texts_v))[:, 1]
    return reg, cv, ids_v, y_v, probabilities


def _spark(train, validation, grid, folds, seed, pattern, lowercase, num_features):
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import IDF, ElementwiseProduct, HashingTF, NGram, Normalizer, RegexTokenizer
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import SparseVector, Vectors, VectorUDT
    from sklearn.metrics import f1_score

    from jobs.learning.classifier import fit_partitions, fold_column

    def sublinear(v):
        return SparseVector(v.size, v.indices, 1.0 + np.log(v.values))

    to_sublinear = F.udf(sublinear, VectorUDT())
    tokenizer = RegexTokenizer(
        inputCol="text", outputCol="words", pattern=pattern, gaps=False, toLowercase=lowercase
    )
    bigrams = NGram(n=2, inputCol="words", outputCol="bigrams")
    hashing = HashingTF(inputCol="terms", outputCol="tf", numFeatures=num_features)

    def features(df):
        words = bigrams.transform(tokenizer.transform(df.withColumn("text", F.coalesce("text", F.lit("")))))
        tf = hashing.transform(words.withColumn("terms", F.concat("words", "bigrams")))
        return tf.select("id", F.col("label").cast("double").alias("label"), to_sublinear("tf").alias("tf"))

    # read by every fit: cached on classic Spark, recomputed on Connect (serverless refuses caching); the folds
    # stratified as in the sklearn engine: within each label, a seeded hash order dealt round-robin
    data = reuse(features(train).withColumn("fold", fold_column(folds, seed)))

    normalizer = Normalizer(inputCol="weighted", outputCol="features", p=2.0)

    def fit(rows, reg):
        # scikit-learn's TF-IDF exactly: smooth idf ln((1 + n) / (1 + df)) + 1 (Spark's IDF omits the + 1), then
        # each row scaled to unit length (Spark's IDF does not normalise)
        idf = IDF(inputCol="tf", outputCol="unused").fit(rows)
        weigh = ElementwiseProduct(
            scalingVec=Vectors.dense(idf.idf.toArray() + 1.0), inputCol="tf", outputCol="weighted"
        )
        lr = LogisticRegression(regParam=reg, standardization=False, maxIter=100, tol=1e-6)
        return weigh, lr.fit(fit_partitions(normalizer.transform(weigh.transform(rows)), idf.numDocs))

    def predict(weigh, model, rows):
        scored = model.transform(normalizer.transform(weigh.transform(rows))).select(
            "id", "label", vector_to_array("probability")[1].alias("p")
        )
        table = scored.orderBy("id").toArrow()
        return (
            table.column("id").to_pylist(),
            np.asarray(table.column("label").to_pylist(), np.int64),
            np.asarray(table.column("p").to_pylist(), np.float64),
        )

    try:
        cv = []
        for reg in grid:
            scores = []
            for f in range(folds):
                weigh, model = fit(data.where(F.col("fold") != f), reg)
                _, y_f, p_f = predict(weigh, model, data.where(F.col("fold") == f))
                scores.append(f1_score(y_f, (p_f >= 0.5).astype(int), zero_division=0))
            cv.append((reg, float(np.mean(scores))))
        reg = _best(cv)
        weigh, model = fit(data, reg)
        ids_v, y_v, probabilities = predict(weigh, model, features(validation))
    finally:
        release(data)
    return reg, cv, ids_v, y_v, probabilities


def _f1_of(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """F1 of each row of (resamples, rows) 0/1 arrays; 0 where there are no positives at all."""
    tp = (predicted & labels).sum(axis=-1)
    fp = (predicted & ~labels).sum(axis=-1)
    fn = (~predicted & labels).sum(axis=-1)
    return np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)


def _resamples(n: int, seed: int, samples: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def bootstrap_f1(
    labels: np.ndarray,
    probabilities: np.ndarray,
    threshold: float = 0.5,
    seed: int = 0,
    samples: int = BOOTSTRAP_SAMPLES,
) -> list[float]:
    """The 95 % percentile bootstrap interval [low, high] of F1 at ``threshold`` over the validation rows."""
    labels = np.asarray(labels).astype(bool)
    if len(labels) == 0:
        return [0.0, 0.0]
    predicted = np.asarray(probabilities) >= threshold
    index = _resamples(len(labels), seed, samples)
    f1 = _f1_of(labels[index], predicted[index])
    return [float(np.percentile(f1, 2.5)), float(np.percentile(f1, 97.5))]


def compare(
    labels: np.ndarray,
    ours: np.ndarray,
    theirs: np.ndarray,
    threshold: float = 0.5,
    seed: int = 0,
    samples: int = BOOTSTRAP_SAMPLES,
) -> dict:
    """F1(ours) - F1(theirs) on the same rows, with the paired bootstrap's 95 % interval, and a verdict."""
    labels = np.asarray(labels).astype(bool)
    a, b = np.asarray(ours) >= threshold, np.asarray(theirs) >= threshold
    difference = float(_f1_of(labels, a) - _f1_of(labels, b))
    index = _resamples(len(labels), seed, samples)
    deltas = _f1_of(labels[index], a[index]) - _f1_of(labels[index], b[index])
    low, high = float(np.percentile(deltas, 2.5)), float(np.percentile(deltas, 97.5))
    verdict = "embeddings better" if low > 0 else "baseline better" if high < 0 else "no clear winner"
    return {
        "f1_difference": difference,
        "interval": [low, high],
        "verdict": verdict,
        "rows": int(len(labels)),
    }


def quality_lines(metrics: dict) -> list[str]:
    """What a person reads at the end of training: F1 with its interval, the baseline's, and which is better."""
    from jobs.learning.selection import describe as describe_selection

    m = metrics["validation"]
    low, high = m.get("f1_interval") or (None, None)
    selection = metrics.get("selection")
    lines = [f"embedding set selected: {describe_selection(selection)}"] if selection else []
    lines.append(
        f"F1 on the validation split: {m['f1']:.3f}"
        + (f" (95 % bootstrap interval {low:.3f}-{high:.3f}, {m['rows']:,} rows)" if low is not None else "")
    )
    b = metrics.get("tfidf_baseline")
    if b:
        b_low, b_high = b["f1_interval"]
        lines.append(f"honest baseline ({describe(b)}): F1 {b['f1']:.3f} ({b_low:.3f}-{b_high:.3f})")
    c = metrics.get("comparison")
    if c:
        d_low, d_high = c["interval"]
        lines.append(
            f"embeddings - baseline: {c['f1_difference']:+.3f} F1 (paired 95 % interval {d_low:+.3f} to "
            f"{d_high:+.3f}): {c['verdict']}"
        )
    return lines
