"""Ingest: text files -> Delta documents + rejects, on a real local Spark session and real Delta tables."""

from __future__ import annotations

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from jobs.ingest import run
from jobs.lake.delta_tables import table_version
from jobs.platform.errors import InputError
from jobs.platform.paths import default_sample
from tests.conftest import shared_path


def documents(path):
    return {r["id"]: r for r in DeltaTable(path).to_pyarrow_table().to_pylist()}


def test_the_built_in_sample_gives_documents_and_reasoned_rejects(spark, local_cfg, tmp_path):
    table, rejects = str(tmp_path / "docs"), str(tmp_path / "rejects")
    summary = run(spark, local_cfg, default_sample(), table, rejects)
    assert summary.read == 47 and summary.added == 43
    assert summary.rejected == {
        "missing id": 1,
        "missing text": 1,
        "label '2' is not 0 or 1": 1,
        "duplicate id": 1,
    }
    docs = documents(table)
    assert len(docs) == 43 and set(r["label"] for r in docs.values()) == {0, 1}
    # the quoted tweet that spans lines, masked profanity, non-ASCII and emoji arrive intact
    assert docs["42"]["text"] == "Update bricked my phone\nagain\n$&@*# this, I'm done"
    assert "東京" in docs["43"]["text"] and "📱🔋" in docs["43"]["text"]
    assert docs["3"]["text"] != "Same id as an earlier row: a duplicate"  # the first occurrence wins
    bad = DeltaTable(rejects).to_pyarrow_table().to_pylist()
    by_reason = {r["reason"]: r for r in bad}
    assert by_reason["duplicate id"]["id"] == "3" and by_reason["duplicate id"]["record"] == 47
    assert by_reason["missing text"]["record"] == 45
    assert all(r["source_file"].endswith("tweets_labelled.csv") for r in bad)


def test_re_running_on_the_same_input_adds_nothing(spark, local_cfg, tmp_path):
    table, rejects = str(tmp_path / "docs"), str(tmp_path / "rejects")
    run(spark, local_cfg, default_sample(), table, rejects)
    versions = table_version(table), table_version(rejects)
    again = run(spark, local_cfg, default_sample(), table, rejects)
    assert again.added == 0 and again.already_present == 43
    assert (table_version(table), table_version(rejects)) == versions
    assert len(documents(table)) == 43 and DeltaTable(rejects).to_pyarrow_table().num_rows == 4


def test_a_grown_input_adds_exactly_the_new_ids(spark, local_cfg, tmp_path):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("id,label,text\n1,0,one\n2,1,two\n", encoding="utf-8")
    second.write_text("id,label,text\n1,0,one\n2,1,two\n3,0,three\n", encoding="utf-8")
    table = str(tmp_path / "docs")
    run(spark, local_cfg, str(first), table, table + "_rejects")
    summary = run(spark, local_cfg, str(second), table, table + "_rejects")
    assert (summary.added, summary.already_present) == (1, 2)
    assert sorted(documents(table)) == ["1", "2", "3"]


def test_json_and_parquet_inputs_unlabelled_and_numeric_ids(spark, local_cfg, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(
        "\n".join(json.dumps({"id": i, "text": f"text {i}"}) for i in range(5)) + "\n", encoding="utf-8"
    )
    run(spark, local_cfg, str(src), str(tmp_path / "j"), str(tmp_path / "jr"))
    docs = documents(str(tmp_path / "j"))
    assert sorted(docs) == ["0", "1", "2", "3", "4"] and docs["2"]["label"] is None

    pq.write_table(
        pa.table({"doc_id": ["a", "b"], "body": ["x", "y"], "label": [1, 0]}), tmp_path / "in.parquet"
    )
    cfg = type(local_cfg)(
        {
            **local_cfg.as_dict(),
            "ingest": {**local_cfg.as_dict()["ingest"], "id_column": "doc_id", "text_column": "body"},
        },
        "test",
    )
    run(spark, cfg, str(tmp_path / "in.parquet"), str(tmp_path / "p"), str(tmp_path / "pr"))
    assert {k: v["label"] for k, v in documents(str(tmp_path / "p")).items()} == {"a": 1, "b": 0}


def test_unusable_inputs_fail_with_what_to_do(spark, local_cfg, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        run(spark, local_cfg, str(tmp_path / "nope.csv"), str(tmp_path / "t"), str(tmp_path / "r"))
    (tmp_path / "x.txt").write_text("a\n", encoding="utf-8")
    with pytest.raises(InputError, match="--format csv"):
        run(spark, local_cfg, str(tmp_path / "x.txt"), str(tmp_path / "t"), str(tmp_path / "r"))
    (tmp_path / "cols.csv").write_text("key,body\n1,hello\n", encoding="utf-8")
    with pytest.raises(InputError, match="no 'text' or 'tweet' column.*ingest.text_column"):
        run(spark, local_cfg, str(tmp_path / "cols.csv"), str(tmp_path / "t"), str(tmp_path / "r"))
    assert not DeltaTable.is_deltatable(str(tmp_path / "t"))


def expected_rows(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_real_tweets_train_csv_gives_every_row_with_its_label(spark, local_cfg, tmp_path):
    source = shared_path("data", "tweets", "train.csv")
    table = str(tmp_path / "train")
    summary = run(spark, local_cfg, str(source), table, table + "_rejects")
    expected = {r["id"]: r for r in expected_rows(source)}
    assert summary.added == 6336 and summary.rejected == {}
    docs = documents(table)
    assert len(docs) == 6336
    assert {i: d["label"] for i, d in docs.items()} == {i: int(r["label"]) for i, r in expected.items()}
    assert {i: d["text"] for i, d in docs.items()} == {i: r["tweet"] for i, r in expected.items()}
    assert sum(d["label"] for d in docs.values()) == sum(int(r["label"]) for r in expected.values())


def test_real_tweets_unlabeled_csv(spark, local_cfg, tmp_path):
    source = shared_path("data", "tweets", "unlabeled.csv")
    table = str(tmp_path / "unlabeled")
    summary = run(spark, local_cfg, str(source), table, table + "_rejects")
    assert summary.added == 1953 and summary.rejected == {}
    assert all(d["label"] is None for d in documents(table).values())


def test_bytes_that_are_not_utf8_are_rejected_or_decoded_never_corrupted(spark, local_cfg, tmp_path):
    from jobs.platform.config import load_config

    latin = tmp_path / "latin1.csv"
    latin.write_bytes("id,label,text\n1,0,café au lait\n2,1,plain ascii\n".encode("latin-1"))
    summary = run(spark, local_cfg, str(latin), str(tmp_path / "docs"), str(tmp_path / "rejects"))
    assert summary.added == 1 and summary.rejected == {"not valid utf-8 (set ingest.encoding)": 1}
    assert all("\ufffd" not in d["text"] for d in documents(str(tmp_path / "docs")).values())
    rejected = DeltaTable(str(tmp_path / "rejects")).to_pyarrow_table().to_pylist()
    assert [(r["id"], r["record"], r["reason"]) for r in rejected] == [
        ("1", 1, "not valid utf-8 (set ingest.encoding)")
    ]
    decoded = load_config("local", ["delta.engine=delta-rs", "ingest.encoding=latin-1"])
    again = run(spark, decoded, str(latin), str(tmp_path / "docs2"), str(tmp_path / "rejects2"))
    assert again.added == 2 and documents(str(tmp_path / "docs2"))["1"]["text"] == "café au lait"
    # a U+FFFD that really is in a UTF-8 input is kept: it is the input's
    real = tmp_path / "real.csv"
    real.write_text("id,text\n7,replacement \ufffd char\n", encoding="utf-8")
    run(spark, local_cfg, str(real), str(tmp_path / "docs3"), str(tmp_path / "rejects3"))
    assert documents(str(tmp_path / "docs3"))["7"]["text"] == "replacement \ufffd char"


def test_empty_inputs_and_missing_columns_name_only_the_inputs_own(spark, local_cfg, tmp_path):
    from jobs.platform.errors import ConfigError

    for name, content in (("empty.csv", ""), ("header.csv", "id,text\n")):
        (tmp_path / name).write_text(content, encoding="utf-8")
        with pytest.raises(InputError, match=f"no rows in {tmp_path / name}"):
            run(spark, local_cfg, str(tmp_path / name), str(tmp_path / "t"), str(tmp_path / "r"))
    (tmp_path / "cols.csv").write_text("key,body\n1,hello\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"\(columns: \['key', 'body'\]\)"):
        run(spark, local_cfg, str(tmp_path / "cols.csv"), str(tmp_path / "t"), str(tmp_path / "r"))
    from jobs.platform.config import load_config

    with pytest.raises(ConfigError, match="ingest.encoding: 'klingon' is not an encoding"):
        run(spark, load_config("local", ["ingest.encoding=klingon"]), str(tmp_path / "cols.csv"), "t", "r")


def test_an_open_quote_and_a_broken_json_line_are_rejected_as_what_they_are(spark, local_cfg, tmp_path):
    from jobs.platform.config import load_config

    def ingest(name: str, content: str, cfg=local_cfg):
        (tmp_path / name).write_text(content, encoding="utf-8")
        return run(spark, cfg, str(tmp_path / name), str(tmp_path / f"{name}-t"), str(tmp_path / f"{name}-r"))

    # a quote left open swallows the records after it: the record that opened it is rejected, saying so
    opened = ingest(
        "open.csv", 'id,label,tweet\n1,0,"fine"\n2,1,"unterminated quote\n3,0,after it\n4,1,last\n'
    )
    reason = "unterminated quote opened at record 2, 2 lines absorbed"
    assert (opened.read, opened.added, opened.rejected) == (2, 1, {reason: 1})
    assert (
        f"read 2 records: added 1, skipped 0 already in the table, rejected 1 (1 {reason})"
        == opened.describe()
    )
    # a quoted field over ingest.max_quoted_lines, mid-file; a lone quote inside an unquoted field is only text
    few_lines = load_config("local", ["delta.engine=delta-rs", "ingest.max_quoted_lines=2"])
    long = ingest(
        "long.csv", 'id,label,tweet\n1,0,"a\nb\nc\nd"\n2,1,"two\nlines"\n3,0,my 5" screen\n', few_lines
    )
    assert long.added == 2 and long.rejected == {
        "unterminated quote opened at record 1, 3 lines absorbed (a field over ingest.max_quoted_lines = 2)": 1
    }
    assert documents(str(tmp_path / "long.csv-t"))["3"]["text"] == 'my 5" screen'
    # a JSON line that does not parse is "malformed JSON", its record number and raw text kept
    lines = '{"id": "a", "text": "fine", "label": 1}\n{"id": "b", "text": broken\n{"id": "c", "text": "ok", "label": 0}\n'
    broken = ingest("docs.jsonl", lines)
    assert broken.added == 2 and broken.rejected == {"malformed JSON": 1}
    rejected = DeltaTable(str(tmp_path / "docs.jsonl-r")).to_pyarrow_table().to_pylist()
    assert [(r["record"], r["reason"], r["text"]) for r in rejected] == [
        (2, "malformed JSON", '{"id": "b", "text": broken')
    ]
    with pytest.raises(InputError, match="no line of .*nothing.json is a JSON object .*first: 'not json'"):
        ingest("nothing.json", "not json\nnor this\n")


@pytest.fixture(params=["delta-rs", "spark"], ids=["delta-rs", "connector"])
def engine(request, spark):
    from jobs.lake.delta_tables import has_delta_connector

    if request.param == "spark" and not has_delta_connector(spark):
        pytest.skip("this session has no Delta connector (./setup.sh installs it)")
    return request.param


def test_a_folder_is_read_incrementally_new_and_changed_files_only(spark, engine, tmp_path):
    import os
    import shutil

    from jobs.ingest import source_files_table_for
    from jobs.lake.delta_tables import read_delta, snapshot_version
    from jobs.platform.config import load_config

    cfg = load_config("local", [f"delta.engine={engine}"])
    folder, table = tmp_path / "incoming", str(tmp_path / "docs")
    rejects, files = table + "_rejects", source_files_table_for(table)
    folder.mkdir()
    (folder / "a.csv").write_text("id,label,text\n1,0,one\n2,1,two\n", encoding="utf-8")
    (folder / "b.csv").write_text("id,label,text\n3,0,three\n4,1,four\n5,0,\n", encoding="utf-8")

    def ingest(config=cfg):
        return run(spark, config, str(folder), table, rejects, fmt="csv")

    def ids(path):
        return sorted(r["id"] for r in read_delta(spark, path, engine).select("id").collect())

    def listed():
        rows = read_delta(spark, files, engine).collect()
        return sorted((r["path"].rsplit("/", 1)[1], r["records"]) for r in rows)

    first = ingest()
    assert (first.files, first.read, first.added, first.rejected) == ((2, 2), 5, 4, {"missing text": 1})
    assert listed() == [("a.csv", 2), ("b.csv", 3)]

    versions = [snapshot_version(spark, t, engine) for t in (table, rejects, files)]
    nothing = ingest()  # nothing new: no file read, no commit anywhere
    assert (nothing.files, nothing.read, nothing.added, nothing.version) == ((0, 2), 0, 0, versions[0])
    assert [snapshot_version(spark, t, engine) for t in (table, rejects, files)] == versions

    # a new file (one id new, one already in the table) and one with a header only: just those two are read
    (folder / "c.csv").write_text("id,label,text\n6,1,six\n1,0,one again\n", encoding="utf-8")
    (folder / "d.csv").write_text("id,label,text\n", encoding="utf-8")
    grown = ingest()
    assert (grown.files, grown.read, grown.added, grown.already_present) == ((2, 4), 2, 1, 1)
    assert listed() == [("a.csv", 2), ("b.csv", 3), ("c.csv", 2), ("d.csv", 0)]

    # a file changed in place is read again: its new id added, its old ones skipped
    (folder / "a.csv").write_text("id,label,text\n1,0,one\n2,1,two\n7,0,seven\n", encoding="utf-8")
    later = os.stat(folder / "a.csv").st_mtime + 5
    os.utime(folder / "a.csv", (later, later))
    changed = ingest()
    assert (changed.files, changed.read, changed.added, changed.already_present) == ((1, 4), 3, 1, 2)
    assert ids(table) == ["1", "2", "3", "4", "6", "7"]

    # the list lost (a run killed after its rows were committed, before it listed its files): every file is
    # read again and nothing is added twice; so with delta.incremental off
    shutil.rmtree(files)
    for config in (cfg, load_config("local", [f"delta.engine={engine}", "delta.incremental=false"])):
        again = ingest(config)
        assert (again.files, again.read, again.added) == ((4, 4), 8, 0)
    # (read together, c.csv's second "1" is a duplicate of a.csv's within the input: now a reject too)
    assert ids(table) == ["1", "2", "3", "4", "6", "7"] and ids(rejects) == ["1", "5"]

    # the documents table deleted, its list of files left behind: the folder is read whole again
    shutil.rmtree(table)
    rebuilt = ingest()
    assert (rebuilt.files, rebuilt.added) == ((4, 4), 6) and ids(table) == ["1", "2", "3", "4", "6", "7"]
