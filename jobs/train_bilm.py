"""Train-biLM job: a corpus (Delta documents or clean table, or text files) -> an ELMo model you can embed with.

    ./spark-submit.sh jobs/train_bilm.py --input CORPUS --output MODEL_DIR [--format delta|text] [--steps N]

Spark cleans the documents (the clean stage's settings, so the model sees what the embed stage will feed it),
splits sentences, counts words and writes the vocabulary (<S>, </S>, <UNK>, then the top words). Training then
runs on this node (see jobs/learning/bilm_training.py), prints progress, and checkpoints to MODEL_DIR/checkpoint.npz: a
killed run, started again with the same command, resumes there. At the end it prints the held-out perplexity of
each direction beside a unigram baseline's and exports MODEL_DIR/options.json + weights.hdf5 (AllenNLP /
bilm-tf format) + vocab.txt + training.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.clean import check_spacy, clean_documents, clean_settings
from jobs.lake.delta_tables import read_delta
from jobs.learning.bilm_training import (
    BilmTrainer,
    TrainSettings,
    build_vocabulary,
    make_reporter,
    split_held_out,
    tokens_per_step,
)
from jobs.platform.cli import job_parser, log, run_job
from jobs.platform.config import Config
from jobs.platform.errors import InputError
from jobs.platform.paths import local_path, spark_path
from jobs.platform.session import default_parallelism, get_spark, ship_code

SENTENCE_END = {".", "!", "?"}


def train_settings(cfg: Config) -> TrainSettings:
    values = {f.name: getattr(cfg.train_bilm, f.name) for f in fields(TrainSettings)}
    return TrainSettings(**values)


def corpus_tokens(spark: SparkSession, cfg: Config, path: str, fmt: str) -> DataFrame:
    """One row per document with its cleaned ``tokens``: a clean table as it is, anything else cleaned here."""
    if fmt == "text":
        docs = spark.read.text(spark_path(path)).select(
            F.monotonically_increasing_id().cast("string").alias("id"), F.col("value").alias("text")
        )
    else:
        docs = read_delta(spark, path, cfg.delta.engine)
        if "tokens" in docs.columns:
            return docs.select("tokens")
        if "text" not in docs.columns:
            raise InputError(f"{path} has neither 'tokens' nor 'text' (columns: {docs.columns})")
    settings = clean_settings(cfg)
    model, version = check_spacy(settings)
    partitions = cfg.clean.partitions or default_parallelism(spark)
    ship_code(spark)
    cleaned = clean_documents(
        docs.select("id", "text").repartition(partitions),
        settings,
        model,
        settings.fingerprint(model, version),
        cfg.clean.max_reject_fraction,
    )
    return cleaned.where(F.col("error").isNull()).select("tokens")  # a text spaCy fails on is left out


def split_sentences(tokens: list[str], split: bool) -> list[list[str]]:
    if not split:
        return [tokens] if tokens else []
    sentences, current = [], []
    for token in tokens:
        current.append(token)
        if token in SENTENCE_END:
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


def run(
    spark: SparkSession,
    cfg: Config,
    input_path: str,
    output: str,
    fmt: str = "delta",
    steps: int | None = None,
) -> dict:
    settings = train_settings(cfg)
    if steps is not None:
        settings.max_steps = steps
    out = Path(local_path(output))
    out.mkdir(parents=True, exist_ok=True)
    documents = corpus_tokens(spark, cfg, input_path, fmt).where(F.size("tokens") > 0)
    # one pass over the corpus (spaCy runs once): the driver needs every token list for training anyway
    token_lists = [r["tokens"] for r in documents.toLocalIterator()]
    counts = Counter(word for tokens in token_lists for word in tokens)
    vocab = build_vocabulary(counts, settings.vocab_size)
    sentences = [
        s for tokens in token_lists for s in split_sentences(list(tokens), cfg.train_bilm.sentence_split)
    ]
    train, held_out = split_held_out(sentences, settings.held_out_fraction, settings.seed)
    n_tokens = sum(len(s) + 1 for s in train)  # each token predicts the next; the last predicts </S>
    stream_tokens = sum(len(s) + 2 for s in train)  # <S> tokens </S>, as the streams hold them
    log(
        "train_bilm",
        f"{len(sentences)} sentences ({len(train)} train, {len(held_out)} held out), {n_tokens} training "
        f"tokens, {len(counts)} distinct words, vocabulary {len(vocab)}",
    )

    trainer = BilmTrainer(settings, vocab)
    steps_per_epoch = max(1, (stream_tokens // settings.batch_size - 1) // settings.unroll_steps)
    total = settings.max_steps or steps_per_epoch * settings.epochs
    checkpoint = out / "checkpoint.npz"
    epoch, window = 0, 0
    if checkpoint.exists():
        epoch, window = trainer.load_checkpoint(checkpoint)
        log(
            "train_bilm",
            f"resuming from {checkpoint} at step {trainer.step} (epoch {epoch + 1}, window {window})",
        )
    report = make_reporter(total, tokens_per_step(settings), trainer.step, lambda m: log("train_bilm", m))
    save = lambda e, w: trainer.save_checkpoint(checkpoint, e, w)  # noqa: E731
    start = time.perf_counter()
    first_step = trainer.step
    while trainer.step < total:
        finished = trainer.run_epoch(train, epoch, window, report, save, total)
        if not finished:
            break
        epoch, window = epoch + 1, 0
        trainer.position = (epoch, 0)
        save(epoch, 0)
    took = time.perf_counter() - start
    trainer.save_checkpoint(checkpoint, *trainer.position)
    ppl_f, ppl_b = trainer.perplexity(held_out) if held_out else (float("nan"), float("nan"))
    unigram = trainer.unigram_perplexity(train, held_out) if held_out else float("nan")
    trainer.export(out)
    metrics = {
        "steps": trainer.step,
        "training_tokens": n_tokens,
        "vocabulary": len(vocab),
        "held_out_sentences": len(held_out),
        "held_out_perplexity_forward": round(ppl_f, 2),
        "held_out_perplexity_backward": round(ppl_b, 2),
        "unigram_perplexity": round(unigram, 2),
        "tokens_per_second": round((trainer.step - first_step) * tokens_per_step(settings) / took, 1)
        if took
        else None,
        "settings": json.loads(json.dumps(vars(settings))),
    }
    (out / "training.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    log(
        "train_bilm",
        f"held-out perplexity: forward {ppl_f:,.1f}, backward {ppl_b:,.1f}; unigram baseline {unigram:,.1f}",
    )
    return metrics


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser("train_bilm", __doc__.split("\n\n")[0])
    parser.add_argument(
        "--input", required=True, help="Delta table (documents or clean) or text files (--format text)"
    )
    parser.add_argument(
        "--output", required=True, help="model folder (checkpoint, options.json, weights.hdf5, vocab.txt)"
    )
    parser.add_argument(
        "--format", choices=["delta", "text"], default="delta", help="corpus format (default: delta)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="stop after this many steps (default: train_bilm.epochs)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    def job(args: argparse.Namespace, cfg: Config) -> int:
        spark = get_spark(cfg)
        metrics = run(spark, cfg, args.input, args.output, args.format, args.steps)
        print(
            f"model: {Path(args.output).resolve()} ({metrics['steps']} steps; held-out perplexity fw "
            f"{metrics['held_out_perplexity_forward']}, bw {metrics['held_out_perplexity_backward']}, unigram "
            f"{metrics['unigram_perplexity']})"
        )
        return 0

    return run_job(build_parser(), argv, job)


if __name__ == "__main__":
    sys.exit(main())
