"""Training our own biLM: vocabulary, progress, checkpoints that resume, held-out perplexity, and an export the
runtime loads and reproduces exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jobs import train_bilm
from jobs.learning.bilm_training import BOS, EOS, UNK, BilmTrainer, TrainSettings, build_vocabulary
from jobs.platform.config import load_config

TINY = [
    "train_bilm.vocab_size=60",
    "train_bilm.char_dim=4",
    "train_bilm.filters=[[1, 4], [2, 8], [3, 8]]",
    "train_bilm.n_highway=1",
    "train_bilm.projection_dim=8",
    "train_bilm.lstm_dim=16",
    "train_bilm.batch_size=2",
    "train_bilm.unroll_steps=5",
    "train_bilm.checkpoint_every=2",
    "train_bilm.held_out_fraction=0.2",
    "train_bilm.dropout=0.0",
    "clean.lemmatize=false",
    "delta.engine=delta-rs",
]
CORPUS = [
    "my phone battery died again today!",
    "the new laptop is fast and quiet.",
    "loving the camera on this phone",
    "worst update ever, the tablet is slow.",
    "great screen, great battery, great phone!",
    "the charger broke after two days",
] * 6


def tiny_settings() -> TrainSettings:
    return train_bilm.train_settings(load_config("local", TINY))


def test_vocabulary_is_in_the_reference_format():
    vocab = build_vocabulary({"phone": 5, "a": 9, "b": 5, "<S>": 3}, size=5)
    assert vocab == [BOS, EOS, UNK, "a", "b"]


def test_exported_model_reproduces_the_trained_model_exactly(tmp_path):
    settings = tiny_settings()
    sentences = [s.split() for s in CORPUS]
    vocab = build_vocabulary({w: 1 for s in sentences for w in s}, 60)
    trainer = BilmTrainer(settings, vocab)
    report = []
    trainer.run_epoch(sentences, 0, 0, lambda *a: report.append(a), None, total_steps=4)
    assert trainer.step == 4 and len(report) == 4
    trainer.export(tmp_path / "model")

    from udfs.elmo import load_elmo

    elmo = load_elmo(tmp_path / "model")
    sentence = ["the", "phone", "is", "great", "unseen-word"]
    n = len(sentence)
    ids, _ = elmo.encoder.batch([sentence])
    rev, _ = elmo.encoder.batch([sentence[::-1]])
    # the backward stream is </S> t_n ... t_1 <S>: the <S>/</S> char codes swap places
    rev[0, 0], rev[0, n + 1] = ids[0, n + 1], ids[0, 0]
    c0, m0 = trainer.zero_state(1)
    (top_f, top_b), _, _ = trainer._top_outputs(ids, rev, c0, m0, training=False)
    top_f, top_b = np.asarray(top_f)[:, 0], np.asarray(top_b)[:, 0]  # (T, S)
    expected = np.concatenate([top_f[1 : n + 1], top_b[n:0:-1]], axis=-1)
    got = elmo.embed([sentence], layer="lstm_outputs2")[0]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert (tmp_path / "model" / "vocab.txt").read_text().split("\n")[:3] == [BOS, EOS, UNK]


@pytest.mark.slow
def test_the_job_trains_checkpoints_resumes_and_reports_perplexity(spark, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    out = tmp_path / "model"
    cfg = load_config("local", TINY)
    first = train_bilm.run(spark, cfg, str(corpus), str(out), fmt="text", steps=3)
    assert first["steps"] == 3 and (out / "checkpoint.npz").exists()
    again = train_bilm.run(spark, cfg, str(corpus), str(out), fmt="text", steps=8)
    assert again["steps"] == 8
    progress = capsys.readouterr().err
    assert "resuming from" in progress and "at step 3" in progress
    assert "tokens/s" in progress and "perplexity fw" in progress and "left" in progress
    metrics = json.loads((out / "training.json").read_text())
    assert metrics["held_out_perplexity_forward"] > 1 and metrics["unigram_perplexity"] > 1

    from udfs.elmo import load_elmo

    vectors = load_elmo(out).embed([["my", "phone"]], layer="elmo", pooling="mean")
    assert vectors[0].shape == (16,) and np.isfinite(vectors[0]).all()


def test_large_vocabularies_train_with_sampled_softmax():
    settings = tiny_settings()
    settings.sampled_softmax_above, settings.negative_samples = 10, 8
    sentences = [s.split() for s in CORPUS]
    trainer = BilmTrainer(settings, build_vocabulary({w: 1 for s in sentences for w in s}, 60))
    losses = []
    trainer.run_epoch(sentences, 0, 0, lambda *a: losses.append(a[4:]), None, total_steps=3)
    assert len(losses) == 3 and all(np.isfinite(loss).all() for loss in losses)
    forward, backward = trainer.perplexity(sentences[:6])  # evaluation always uses the full softmax
    assert forward > 1 and backward > 1
