"""One bad row never stops a stage: failures are quarantined with their reason, once, and retried by the next run;
too many fail the job with nothing committed; a huge document is cut, cleaned and embedded."""

from __future__ import annotations

import pytest
from deltalake import DeltaTable

from jobs import clean as clean_job
from jobs import embed as embed_job
from jobs import ingest
from jobs.lake.delta_tables import add_missing_columns, read_delta, table_version, write_delta
from jobs.lake.quarantine import warning_line
from tests.elmo_fixture import fixture_dir
from tests.test_stages import cfg_with, documents_table, rows

TEXTS = {
    **{
        f"ok{i}": f"the phone number {i} works and the screen is {'great' if i % 2 else 'dim'}"
        for i in range(7)
    },
    "bad": "this POISON document breaks every model",
}


def rejects(path) -> list[dict]:
    return DeltaTable(str(path)).to_pyarrow_table().to_pylist()


def test_a_failing_document_is_quarantined_once_retried_and_healed(spark, tmp_path, monkeypatch):
    docs = documents_table(tmp_path / "docs", TEXTS)
    clean, emb = str(tmp_path / "clean"), str(tmp_path / "emb")
    cfg = cfg_with("clean.max_reject_fraction=0.5", "embed.max_reject_fraction=0.5")

    monkeypatch.setenv("ELMO_LAKE_FAIL_CLEAN", "POISON")
    # too many failures (here: any): the job fails and nothing is committed, to either table
    with pytest.raises(Exception, match="TooManyRowFailures") as failed:
        clean_job.run(spark, cfg_with("clean.max_reject_fraction=0"), docs, clean)
    assert "clean.max_reject_fraction=0 allows" in str(failed.value) and "document 'bad'" in str(failed.value)
    assert table_version(clean) is None and table_version(f"{clean}_rejects") is None

    first = clean_job.run(spark, cfg, docs, clean)
    assert set(rows(clean)) == set(TEXTS) - {"bad"}  # every other document is cleaned
    assert first.quarantined.documents == 1 and first.quarantined.recorded == 1
    [reject] = rejects(f"{clean}_rejects")
    assert (reject["stage"], reject["id"]) == ("clean", "bad")
    assert reject["reason"].startswith("InjectedFault: ELMO_LAKE_FAIL_CLEAN matches this document")
    assert reject["processed_by"] == first.fingerprint and reject["failed_at"] is not None
    line = warning_line("clean", first.quarantined)
    assert f"1 documents could not be processed and are quarantined in {clean}_rejects" in line
    assert "document 'bad': InjectedFault" in line

    # retried (it still lacks output) and failing the same way: recorded once; a retried document does not
    # count against max_reject_fraction (else a run retrying only it would always fail)
    again = clean_job.run(spark, cfg_with("clean.max_reject_fraction=0"), docs, clean)
    assert again.quarantined.documents == 1 and again.quarantined.recorded == 0
    assert len(rejects(f"{clean}_rejects")) == 1  # the same failure is never recorded twice

    monkeypatch.delenv("ELMO_LAKE_FAIL_CLEAN")  # the cause fixed: the next run heals the document
    healed = clean_job.run(spark, cfg, docs, clean)
    assert healed.cleaned == 1 and healed.quarantined is None
    assert set(rows(clean)) == set(TEXTS) and len(rejects(f"{clean}_rejects")) == 1  # kept, as history

    monkeypatch.setenv("ELMO_LAKE_FAIL_EMBED", "poison")  # embed sees the cleaned, lowercased tokens
    model = str(fixture_dir())
    with pytest.raises(Exception, match="TooManyRowFailures"):
        embed_job.run(spark, cfg_with("embed.max_reject_fraction=0"), clean, emb, model)
    assert table_version(emb) is None and table_version(f"{emb}_rejects") is None
    first = embed_job.run(spark, cfg, clean, emb, model)
    assert set(rows(emb)) == set(TEXTS) - {"bad"} and first.embedded == len(TEXTS) - 1
    [reject] = rejects(f"{emb}_rejects")
    assert (reject["stage"], reject["id"]) == ("embed", "bad")
    assert reject["reason"].startswith("InjectedFault: ELMO_LAKE_FAIL_EMBED")
    assert reject["processed_by"].startswith(first.model_id)
    again = embed_job.run(spark, cfg_with("embed.max_reject_fraction=0"), clean, emb, model)
    assert (again.quarantined.documents, again.quarantined.recorded) == (1, 0)
    assert len(rejects(f"{emb}_rejects")) == 1
    monkeypatch.delenv("ELMO_LAKE_FAIL_EMBED")
    healed = embed_job.run(spark, cfg, clean, emb, model)
    assert healed.embedded == 1 and healed.quarantined is None and set(rows(emb)) == set(TEXTS)


def test_a_two_million_character_tweet_is_ingested_cut_cleaned_and_embedded(spark, tmp_path):
    words = "the phone battery died again and the new screen is broken today ".split()
    huge = " ".join(words[i % len(words)] for i in range(400_000))[:2_000_000]
    assert len(huge) == 2_000_000
    csv = tmp_path / "tweets.csv"
    normal = {"1": "my phone is great", "3": "the battery died again #fail"}
    csv.write_text(f'id,label,tweet\n1,0,{normal["1"]}\n2,1,"{huge}"\n3,1,{normal["3"]}\n', encoding="utf-8")
    cfg = cfg_with()
    docs, clean, emb = (str(tmp_path / name) for name in ("docs", "clean", "emb"))
    ingested = ingest.run(spark, cfg, str(csv), docs, docs + "_rejects")
    assert ingested.added == 3 and not ingested.rejected
    cleaned = clean_job.run(spark, cfg, docs, clean)
    assert cleaned.cleaned == 3 and cleaned.quarantined is None
    out = rows(clean)
    assert out["2"]["truncated"] and not out["1"]["truncated"] and not out["3"]["truncated"]
    assert len(out["2"]["clean_text"]) <= 100_000 and len(out["2"]["tokens"]) > 15_000
    assert out["2"]["tokens"][:4] == ["the", "phone", "battery", "die"]
    assert out["1"]["tokens"] == ["my", "phone", "be", "great"]  # the others untouched
    embedded = embed_job.run(spark, cfg, clean, emb, str(fixture_dir()))
    assert embedded.embedded == 3 and embedded.quarantined is None
    vectors = rows(emb)
    assert all(vectors[i]["embedding"] is not None and len(vectors[i]["embedding"]) == 32 for i in "123")


@pytest.mark.parametrize("engine", ["delta-rs", "connector"])
def test_a_clean_table_from_before_the_truncated_column_gains_it_when_re_cleaned(spark, tmp_path, engine):
    from jobs.lake.delta_tables import has_delta_connector

    if engine == "connector" and not has_delta_connector(spark):
        pytest.skip("this session has no Delta connector (./setup.sh installs it)")
    setting = "delta.engine=" + ("delta-rs" if engine == "delta-rs" else "spark")
    docs = documents_table(tmp_path / "docs", {"a": "phones are great", "b": "batteries die"})
    clean = str(tmp_path / "clean")
    old = spark.createDataFrame(
        [("a", "phone", ["phone"], False, "clean-old")],
        "id string, clean_text string, tokens array<string>, empty boolean, clean_fingerprint string",
    )
    write_delta(old, clean, mode="error", engine=setting.split("=")[1])
    summary = clean_job.run(spark, cfg_with(setting), docs, clean)
    assert summary.mode == "overwrite" and summary.cleaned == 2
    table = read_delta(spark, clean, setting.split("=")[1])
    assert "truncated" in table.columns
    assert {r["id"]: r["truncated"] for r in table.collect()} == {"a": False, "b": False}
    assert add_missing_columns(spark, clean, setting.split("=")[1], table.schema) == []
