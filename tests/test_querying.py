"""Querying the embeddings: similar (ids, texts, words, near-duplicates) against brute-force NumPy on real tweets
with the default model; sql.py's views and vector functions; Delta statistics on every file delta-rs writes."""

from __future__ import annotations

import csv
import json
import subprocess

import numpy as np
import pyarrow.dataset as ds
import pytest
from deltalake import DeltaTable

from tests.conftest import ROOT, shared_path
from tests.standalone import launch_env

pytestmark = pytest.mark.slow

MODEL = str(ROOT / "models" / "elmo-tweets-small")
TWEETS = 1000


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    """The first 1,000 real tweets: ingested, cleaned and embedded with the default model (delta-rs engine)."""
    from jobs import clean, embed, ingest
    from jobs.platform.config import load_config

    source = shared_path("data", "tweets", "train.csv")
    root = tmp_path_factory.mktemp("lake")
    with open(source, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:TWEETS]
    with open(root / "tweets.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "label", "tweet"])
        writer.writeheader()
        writer.writerows(rows)
    cfg = load_config("local", ["delta.engine=delta-rs", "delta.target_file_rows=300"])
    ingest.run(spark, cfg, str(root / "tweets.csv"), str(root / "docs"), str(root / "docs_rejects"))
    clean.run(spark, cfg, str(root / "docs"), str(root / "clean"))
    embed.run(spark, cfg, str(root / "clean"), str(root / "train_embeddings"), MODEL)
    table = DeltaTable(str(root / "train_embeddings")).to_pyarrow_table().to_pylist()
    vectors = {
        r["id"]: np.asarray(r["embedding"], dtype=np.float64) for r in table if r["embedding"] is not None
    }
    return root, cfg, vectors, [r["tweet"] for r in rows]


def brute_force(vectors: dict, query: np.ndarray, exclude: str | None = None) -> dict[str, float]:
    """Every row's cosine to the query (the query's own id left out)."""
    ids = sorted(i for i in vectors if i != exclude)
    matrix = np.stack([vectors[i] for i in ids])
    scores = matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
    return dict(zip(ids, scores.tolist(), strict=True))


def assert_top_k(got: list[tuple[str, float]], scores: dict[str, float], k: int) -> None:
    """A true top k: the k best scores (to 1e-6, rank by rank), each id's score its own, ties by id."""
    expected = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
    assert len(got) == k
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], atol=1e-6, rtol=0)
    for found, score in got:
        assert abs(scores[found] - score) <= 1e-6  # ids of equal scores may differ only among themselves


def results(table) -> dict[str, list[tuple[str, float]]]:
    rows = DeltaTable(str(table)).to_pyarrow_table().to_pylist()
    by_query: dict[str, list] = {}
    for r in sorted(rows, key=lambda r: (r["query_id"], r["rank"])):
        by_query.setdefault(r["query_id"], []).append((r["id"], r["score"]))
    return by_query


def test_ids_and_texts_return_the_brute_force_top_k(spark, lake, tmp_path):
    from jobs import similar

    root, cfg, vectors, tweets = lake
    ids = sorted(vectors)[::97][:10]
    similar.run(spark, cfg, str(root / "train_embeddings"), str(tmp_path / "by_id"), k=5, ids=ids)
    found = results(tmp_path / "by_id")
    assert sorted(found) == sorted(ids)
    for query in ids:
        assert query not in [i for i, _ in found[query]]  # never itself
        assert_top_k(found[query], brute_force(vectors, vectors[query], exclude=query), 5)
    rows = DeltaTable(str(tmp_path / "by_id")).to_pyarrow_table().to_pylist()
    assert {(r["layer"], r["pooling"]) for r in rows} == {("elmo", "mean")} and {r["rank"] for r in rows} == {
        1,
        2,
        3,
        4,
        5,
    }

    texts = [tweets[3], "my new phone is great and the battery lasts", tweets[500]]
    similar.run(
        spark,
        cfg,
        str(root / "train_embeddings"),
        str(tmp_path / "by_text"),
        k=4,
        texts=texts,
        model_spec=MODEL,
        csv_path=str(tmp_path / "by_text.csv"),
    )
    from jobs.clean import check_spacy, clean_settings
    from udfs.clean import clean_texts
    from udfs.elmo import load_elmo

    tokens = clean_texts(texts, clean_settings(cfg), check_spacy(clean_settings(cfg))[0])
    expected = load_elmo(MODEL).embed(tokens, layer="elmo", pooling="mean")
    found = results(tmp_path / "by_text")
    for n, vector in enumerate(expected, start=1):
        assert_top_k(found[f"text-{n}"], brute_force(vectors, np.asarray(vector, np.float64)), 4)
    with open(tmp_path / "by_text.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 12


def test_all_pairs_finds_exactly_the_pairs_above_the_threshold(spark, lake, tmp_path):
    from jobs import similar

    root, cfg, vectors, _ = lake
    threshold = 0.97
    similar.run(
        spark,
        cfg,
        str(root / "train_embeddings"),
        str(tmp_path / "pairs"),
        all_pairs_mode=True,
        min_score=threshold,
    )
    got = {
        (r["query_id"], r["id"]): r["score"]
        for r in DeltaTable(str(tmp_path / "pairs")).to_pyarrow_table().to_pylist()
    }
    ids = sorted(vectors)
    matrix = np.stack([vectors[i] for i in ids])
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    scores = unit @ unit.T
    rows, cols = np.nonzero(np.triu(scores >= threshold, k=1))
    expected = {(ids[a], ids[b]): scores[a, b] for a, b in zip(rows, cols, strict=True)}
    assert len(expected) > 0
    sure = {p for p, s in expected.items() if s >= threshold + 1e-6}
    assert sure <= set(got) <= set(expected) | {p for p in got if got[p] < threshold + 1e-6}
    for pair, score in got.items():
        assert pair[0] < pair[1] and score >= threshold and abs(score - expected.get(pair, score)) <= 1e-6


def test_words_rank_the_vocabulary_by_their_token_vectors(spark, lake, tmp_path):
    from jobs import similar
    from udfs.elmo import load_elmo

    root, cfg, _, _ = lake
    similar.run(
        spark,
        cfg,
        "",
        str(tmp_path / "words"),
        k=5,
        words=["phone", "happy"],
        vocabulary=str(root / "clean"),
        model_spec=MODEL,
    )
    found = results(tmp_path / "words")
    vocab = sorted(
        {t for r in DeltaTable(str(root / "clean")).to_pyarrow_table().to_pylist() for t in r["tokens"]}
    )
    elmo = load_elmo(MODEL)
    matrix = {
        w: np.asarray(v, np.float64)
        for w, v in zip(
            vocab, elmo.embed([[w] for w in vocab], layer="word_emb", pooling="mean"), strict=True
        )
    }
    for word in ("phone", "happy"):
        assert word not in [w for w, _ in found[word]]
        assert_top_k(found[word], brute_force(matrix, matrix[word], exclude=word), 5)


def test_sql_views_and_vector_functions_on_plain_spark(spark, lake, tmp_path):
    from jobs import sql

    root, cfg, vectors, _ = lake
    a, b = sorted(vectors)[:2]
    result = sql.run(
        spark,
        cfg,
        f"SELECT l.id, cosine_similarity(l.embedding, r.embedding) AS c, dot_product(l.embedding, r.embedding) AS d, "
        f"l2_norm(l.embedding) AS n FROM train_embeddings l JOIN train_embeddings r ON r.id = '{b}' WHERE l.id = '{a}'",
        lake=str(root),
    ).collect()[0]
    va, vb = (
        vectors[a].astype(np.float32).astype(np.float64),
        vectors[b].astype(np.float32).astype(np.float64),
    )
    assert result["c"] == pytest.approx(va @ vb / np.linalg.norm(va) / np.linalg.norm(vb), abs=1e-6)
    assert result["d"] == pytest.approx(va @ vb, rel=1e-6) and result["n"] == pytest.approx(
        np.linalg.norm(va), rel=1e-6
    )
    views = {r["viewName"] for r in spark.sql("SHOW VIEWS").collect()}
    assert {"docs", "docs_rejects", "clean", "train_embeddings"} <= views
    done = subprocess.run(
        [
            str(ROOT / "spark-submit.sh"),
            "jobs/sql.py",
            "--lake",
            str(root),
            "--set",
            "spark.master=local[1]",
            "SELECT id, cosine_similarity(embedding, embedding) AS self FROM train_embeddings ORDER BY id LIMIT 3",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=launch_env(),
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "| id " in done.stdout and "(3 rows shown)" in done.stdout and " 1 " in done.stdout


def test_every_file_delta_rs_writes_has_statistics_that_let_readers_skip_files(lake):
    root, _, _, _ = lake
    log = sorted((root / "train_embeddings" / "_delta_log").glob("*.json"))
    adds = [
        json.loads(line)["add"] for f in log for line in f.read_text().splitlines() if '"add"' in line[:8]
    ]
    assert len(adds) >= 3  # target_file_rows=300 for this lake
    for add in adds:
        stats = json.loads(add["stats"])  # the log itself, as every Delta reader sees it
        assert stats["numRecords"] > 0
        assert (
            {"id", "dim", "layer", "pooling", "created_at"}
            <= set(stats["minValues"])
            <= set(stats["nullCount"])
        )
        assert stats["minValues"]["id"] <= stats["maxValues"]["id"] and stats["nullCount"]["id"] == 0
        assert "embedding" not in stats["minValues"]  # nested: no min/max
        assert stats["minValues"]["created_at"].endswith("Z")
    docs = DeltaTable(str(root / "docs"))
    some_id = docs.to_pyarrow_table(columns=["id"]).column("id")[0].as_py()
    dataset = docs.to_pyarrow_dataset()
    everything = list(dataset.get_fragments())
    matching = list(dataset.get_fragments(filter=ds.field("id") == some_id))
    assert len(everything) >= 3 and 1 <= len(matching) < len(everything)
