"""Similar job: exact top-k cosine neighbours in one embedding set, for ids, texts or words, or near-duplicates.

    ./spark-submit.sh jobs/similar.py --embeddings TABLE (--ids ID[,ID...] | --ids-file FILE | --texts FILE)
        --k K [--model SPEC] [--min-score S] --output TABLE [--csv FILE]
    ./spark-submit.sh jobs/similar.py --embeddings TABLE --all-pairs --min-score S --output TABLE
    ./spark-submit.sh jobs/similar.py --embeddings TABLE --words phone,happy --vocabulary CLEAN_TABLE --k K ...

The set is one (model_id, layer, pooling) of the table (--model-id/--layer/--pooling choose when it holds
several). --ids: queries are rows of the table; --texts: one text per line, cleaned with the clean stage's
settings and embedded with the set's model, layer and pooling (--model must be that model: its model_id is
checked). --words ranks the vocabulary's words (the clean table's tokens) by the cosine of their context-free ELMo
token vectors (layer word_emb), like gensim's most_similar. Output (Delta, replaced on each run; and CSV):
query, query_id, id, rank (1..k), score (cosine, double), model_id, layer, pooling. A query never matches itself;
ties go to the smaller id; rows without a vector never match. Every partition scores its rows with one matrix
product per Arrow batch and keeps its own top k; one merge picks the final k.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from jobs.lake.delta_tables import commit_metadata, engine_name, read_delta, resolve_engine, write_delta
from jobs.platform.cli import job_parser, log, run_job
from jobs.platform.config import Config
from jobs.platform.errors import InputError
from jobs.platform.paths import local_path
from jobs.platform.session import default_parallelism, get_spark, ship_code
from jobs.sql import write_csv
from jobs.train import select_embeddings

OUTPUT_SCHEMA = "query string, query_id string, id string, rank int, score double, model_id string, layer string, pooling string"
RESULTS_DESCRIPTION = (
    "elmo-lake similarity results: for each query, its k nearest rows by cosine (rank 1 = closest)"
)
PAIR_BLOCK_ROWS = (
    4096  # rows per block in --all-pairs: a block pair is one (block x block) product in one task
)


def query_rows(emb: DataFrame, ids: list[str]) -> tuple[list[str], np.ndarray]:
    """The vectors of ``ids`` in the set, in the order given; an error names ids that are missing or null."""
    rows = {
        r["id"]: r["embedding"] for r in emb.where(F.col("id").isin(ids)).select("id", "embedding").collect()
    }
    missing = [i for i in ids if i not in rows]
    empty = [i for i in ids if i in rows and rows[i] is None]
    if missing or empty:
        raise InputError(
            "query ids "
            + "; ".join(
                p
                for p in (
                    f"not in the embedding set: {', '.join(missing[:10])}" if missing else "",
                    f"without a vector (no tokens): {', '.join(empty[:10])}" if empty else "",
                )
                if p
            )
        )
    return ids, np.asarray([rows[i] for i in ids], dtype=np.float32)


def driver_model(spark: SparkSession | None, cfg: Config, model_spec: str | None):
    """The model a spec names, resolved as the embed stage does, and loaded here on the driver."""
    from jobs.embed import resolve_model
    from udfs.elmo.model_source import ModelSource, load_model

    model = resolve_model(
        model_spec or cfg.embed.model, cfg.embed.hub_signature, spark, cfg.embed.backend, cfg.embed.precision
    )
    source = ModelSource(model.directory, model.kind, model.directory)
    return model, load_model(
        source,
        cfg.embed.token_budget,
        model.signature,
        model_id=model.model_id,
        token_cache_mb=cfg.embed.token_cache_mb,
        precision=cfg.embed.precision,
    )


def text_queries(cfg: Config, texts: list[str], key: dict, model_spec: str | None) -> np.ndarray:
    """Texts cleaned as the clean stage does and embedded with the set's model, layer and pooling, here."""
    from jobs.clean import check_spacy, clean_settings
    from udfs.clean import clean_texts

    model, elmo = driver_model(None, cfg, model_spec)
    if model.model_id != key["model_id"]:
        raise InputError(
            f"--model {model_spec or 'default'} is {model.model_id}, but the embedding set was made with "
            f"{key['model_id']}: give --model the model that made it"
        )
    settings = clean_settings(cfg)
    spacy_model, _ = check_spacy(settings)
    tokens = clean_texts(texts, settings, None if spacy_model == "none" else spacy_model)
    vectors = elmo.embed(tokens, layer=key["layer"], pooling=key["pooling"])
    empty = [texts[i] for i, t in enumerate(tokens) if not t]
    if empty:
        raise InputError(f"nothing is left of these texts after cleaning: {empty[:5]}")
    return np.asarray([np.asarray(v).reshape(-1) for v in vectors], dtype=np.float32)


def top_k(
    spark: SparkSession,
    emb: DataFrame,
    queries: np.ndarray,
    labels: list[str],
    query_ids: list[str | None],
    k: int,
    min_score: float | None,
    files: list[str] | None = None,
    key: dict | None = None,
) -> DataFrame:
    """(query, query_id, id, rank, score) of each query's k nearest rows of ``emb`` (id, embedding).

    With ``files`` (the set's data files, readable where the tasks run) each task reads its files with pyarrow
    instead of going through Spark's Parquet reader and its row-by-row Arrow conversion of array columns.
    """
    from udfs.similarity import TOPK_SCHEMA, make_file_topk_function, make_topk_function

    ship_code(spark)
    if files:
        tasks = min(len(files), default_parallelism(spark))
        by_task = [files[i::tasks] for i in range(tasks)]  # one task per core, files dealt evenly
        partial = spark.range(0, tasks, 1, tasks).mapInArrow(
            make_file_topk_function(queries, query_ids, k, min_score, key["layer"], key["pooling"], by_task),
            TOPK_SCHEMA,
        )
    else:
        # no shuffle of the vectors: each task scans the files it reads (stages write one file per task or more)
        partial = emb.select("id", "embedding").mapInArrow(
            make_topk_function(queries, query_ids, k, min_score), TOPK_SCHEMA
        )
    names = spark.createDataFrame(
        [(i, labels[i], query_ids[i]) for i in range(len(labels))],
        "query_index int, query string, query_id string",
    )
    ranked = Window.partitionBy("query_index").orderBy(F.col("score").desc(), F.col("id").asc())
    return (
        partial.withColumn("rank", F.row_number().over(ranked))
        .where(F.col("rank") <= k)
        .join(names, "query_index")
        .select("query", "query_id", "id", F.col("rank").cast("int"), "score")
    )


def local_set_files(cfg: Config, path: str, key: dict, engine: str | None = None) -> list[str] | None:
    """The data files of one set when the delta-rs engine reads a table on a local or mounted disk, else None
    (the connector prunes files by its own statistics and partition values)."""
    from deltalake import DeltaTable

    from jobs.lake.delta_tables import table_uri

    uri = table_uri(path)
    engine = engine or cfg.delta.engine
    if engine != "delta-rs" or "://" in uri or not DeltaTable.is_deltatable(uri):
        return None
    adds = DeltaTable(uri).get_add_actions(flatten=True)
    from urllib.parse import unquote

    import pyarrow as pa

    rows = pa.table(adds).to_pylist()
    return [
        f"{uri}/{unquote(r['path'])}"
        for r in rows
        if r.get("partition.model_id", key["model_id"]) == key["model_id"]
    ]


def all_pairs(spark: SparkSession, emb: DataFrame, min_score: float) -> DataFrame:
    """Pairs of rows scoring at least ``min_score``, each once (id < other id), ranked per first id."""
    from udfs.similarity import PAIRS_SCHEMA, make_pairs_function

    ship_code(spark)
    rows = emb.where(F.col("embedding").isNotNull()).select("id", "embedding")
    n = rows.count()
    blocks = max(1, -(-n // PAIR_BLOCK_ROWS))
    blocked = (
        rows.withColumn("block", F.pmod(F.xxhash64("id"), F.lit(blocks)).cast("int"))
        .groupBy("block")
        .agg(F.collect_list("id").alias("ids"), F.collect_list("embedding").alias("vectors"))
    )
    a = blocked.select(
        F.col("block").alias("block_a"), F.col("ids").alias("ids_a"), F.col("vectors").alias("vectors_a")
    )
    b = blocked.select(
        F.col("block").alias("block_b"), F.col("ids").alias("ids_b"), F.col("vectors").alias("vectors_b")
    )
    pairs = (
        a.join(b, F.col("block_a") <= F.col("block_b"))
        .repartition(max(1, min(blocks * (blocks + 1) // 2, 4 * default_parallelism(spark))))
        .mapInArrow(make_pairs_function(min_score), PAIRS_SCHEMA)
    )
    ranked = Window.partitionBy("id_a").orderBy(F.col("score").desc(), F.col("id_b").asc())
    return pairs.select(
        F.col("id_a").alias("query"),
        F.col("id_a").alias("query_id"),
        F.col("id_b").alias("id"),
        F.row_number().over(ranked).cast("int").alias("rank"),
        "score",
    )


def word_neighbours(
    spark: SparkSession,
    cfg: Config,
    words: list[str],
    vocabulary: str,
    k: int,
    model_spec: str | None,
    min_score: float | None,
) -> tuple[list[tuple], str]:
    """Each word's k nearest vocabulary words by their context-free token vectors (layer word_emb)."""
    from udfs.similarity import TopK

    clean = read_delta(spark, vocabulary, cfg.delta.engine)
    if "tokens" not in clean.columns:
        raise InputError(
            f"--vocabulary {vocabulary} has no 'tokens' column: give a clean table (jobs/clean.py)"
        )
    vocab = sorted(r[0] for r in clean.select(F.explode("tokens")).distinct().collect() if r[0])
    unknown = [w for w in words if w not in set(vocab)]
    if unknown:
        log("similar", f"not in the vocabulary (embedded all the same): {', '.join(unknown)}")
    model, elmo = driver_model(spark, cfg, model_spec)
    log("similar", f"embedding {len(vocab)} vocabulary words once each (layer word_emb)")
    vectors = np.asarray(elmo.embed([[w] for w in vocab], layer="word_emb", pooling="mean"), dtype=np.float32)
    queries = np.asarray(elmo.embed([[w] for w in words], layer="word_emb", pooling="mean"), dtype=np.float32)
    best = TopK(queries, list(words), k, min_score)  # TopK scales the queries to unit length itself
    best.add(np.asarray(vocab, dtype=str), vectors)
    found = sorted(
        zip(best.query.tolist(), best.ids.tolist(), best.scores.tolist(), strict=True),
        key=lambda r: (r[0], -r[2], r[1]),
    )
    ranks: dict[int, int] = {}
    rows = []
    for q, neighbour, score in found:
        ranks[q] = ranks.get(q, 0) + 1
        rows.append((words[q], words[q], neighbour, ranks[q], float(score)))
    return rows, model.model_id


def write_results(
    spark: SparkSession, cfg: Config, result: DataFrame, output: str, csv_path: str | None
) -> int:
    written = write_delta(
        result,
        output,
        mode="overwrite",
        engine=cfg.delta.engine,
        description=RESULTS_DESCRIPTION,
        user_metadata=commit_metadata("similar"),
    )  # results of the newest query replace the last; a missing table is created
    if csv_path:  # the table as written, in query and rank order
        write_csv(read_delta(spark, output, cfg.delta.engine).orderBy("query_id", "rank", "id"), csv_path)
    return written.num_records


def run(
    spark: SparkSession,
    cfg: Config,
    embeddings: str,
    output: str,
    k: int = 10,
    ids: list[str] | None = None,
    texts: list[str] | None = None,
    words: list[str] | None = None,
    vocabulary: str | None = None,
    all_pairs_mode: bool = False,
    min_score: float | None = None,
    model_spec: str | None = None,
    key_filter: dict | None = None,
    csv_path: str | None = None,
) -> int:
    if k < 1:
        raise InputError(f"--k must be at least 1, got {k}")
    if words:
        if not vocabulary:
            raise InputError("--words needs --vocabulary CLEAN_TABLE (the words to rank)")
        rows, model_id = word_neighbours(spark, cfg, words, vocabulary, k, model_spec, min_score)
        result = spark.createDataFrame([(*r, model_id, "word_emb", "none") for r in rows], OUTPUT_SCHEMA)
        return write_results(spark, cfg, result, output, csv_path)
    choice = {"model_id": None, "layer": None, "pooling": None, **(key_filter or {})}
    emb, key = select_embeddings(read_delta(spark, embeddings, cfg.delta.engine), **choice)
    files = local_set_files(cfg, embeddings, key, resolve_engine(spark, cfg.delta.engine))
    if all_pairs_mode:
        if min_score is None:
            raise InputError("--all-pairs needs --min-score S (pairs at least that similar)")
        found = all_pairs(spark, emb, min_score)
    elif ids:
        labels, vectors = query_rows(emb, ids)
        found = top_k(spark, emb, vectors, labels, list(labels), k, min_score, files, key)
    elif texts:
        vectors = text_queries(cfg, texts, key, model_spec)
        text_ids = [f"text-{i + 1}" for i in range(len(texts))]
        found = top_k(spark, emb, vectors, texts, text_ids, k, min_score, files, key)
    else:
        raise InputError("give the queries: --ids, --ids-file, --texts, --words or --all-pairs")
    log("similar", f"searching {key['model_id']} ({key['layer']}, {key['pooling']}, dim {key['dim']})")
    result = found.select(
        "*",
        F.lit(key["model_id"]).alias("model_id"),
        F.lit(key["layer"]).alias("layer"),
        F.lit(key["pooling"]).alias("pooling"),
    )
    return write_results(spark, cfg, result, output, csv_path)


def read_lines(path: str) -> list[str]:
    lines = [line.strip() for line in Path(local_path(path)).read_text(encoding="utf-8").splitlines()]
    found = [line for line in lines if line]
    if not found:
        raise InputError(f"{path} has no lines")
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser("similar", __doc__.split("\n\n")[0])
    parser.add_argument(
        "--embeddings", default="lake/embeddings", help="embedding table (default: %(default)s)"
    )
    queries = parser.add_mutually_exclusive_group(required=True)
    queries.add_argument("--ids", help="comma-separated ids of the table to find neighbours of")
    queries.add_argument("--ids-file", help="a file with one id per line")
    queries.add_argument("--texts", help="a file with one text per line (cleaned and embedded like the set)")
    queries.add_argument("--words", help="comma-separated words: their nearest words of --vocabulary")
    queries.add_argument(
        "--all-pairs", action="store_true", help="every pair within the set above --min-score"
    )
    parser.add_argument("--vocabulary", help="clean table whose tokens are the words to rank (--words)")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query (default: %(default)s)")
    parser.add_argument("--min-score", type=float, default=None, help="only neighbours at least this similar")
    parser.add_argument(
        "--model", default=None, help="the set's ELMo model (--texts, --words); default: built-in"
    )
    parser.add_argument("--model-id", default=None, help="which set of the table, when it holds several")
    parser.add_argument("--layer", default=None, help="which set: its layer")
    parser.add_argument("--pooling", default=None, help="which set: its pooling")
    parser.add_argument("--output", required=True, help="Delta table of the results (replaced on each run)")
    parser.add_argument("--csv", default=None, help="also write the results to this CSV file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    def job(args: argparse.Namespace, cfg: Config) -> int:
        spark = get_spark(cfg)
        ids = [i.strip() for i in args.ids.split(",") if i.strip()] if args.ids else None
        if args.ids_file:
            ids = read_lines(args.ids_file)
        count = run(
            spark,
            cfg,
            args.embeddings,
            args.output,
            k=args.k,
            ids=ids,
            texts=read_lines(args.texts) if args.texts else None,
            words=[w.strip() for w in args.words.split(",") if w.strip()] if args.words else None,
            vocabulary=args.vocabulary,
            all_pairs_mode=args.all_pairs,
            min_score=args.min_score,
            model_spec=args.model,
            key_filter={"model_id": args.model_id, "layer": args.layer, "pooling": args.pooling},
            csv_path=args.csv,
        )
        print(f"similar: {count} rows in {args.output}" + (f" and {args.csv}" if args.csv else ""))
        print(f"delta engine: {engine_name(spark, cfg.delta.engine)}")
        return 0

    return run_job(build_parser(), argv, job)


if __name__ == "__main__":
    sys.exit(main())
