"""Ingest, clean and embed under seeded random input: records whose fields hold quotes, separators, line breaks,
NULs, emoji, huge and empty values, bytes that are not UTF-8, blank lines, and files cut inside a quoted field.
Whatever comes, no traceback: every record Python's csv module reads is a document or a reject, the counts add
up, every document is cleaned and embedded once, and running again adds nothing."""

from __future__ import annotations

import csv
import io
import random

from deltalake import DeltaTable

from jobs.ingest import run
from tests.conftest import ROOT

PIECES = ['"', ",", "\n", "\r\n", "\x00", " ", "é", "📱", "'", ";", "\\", '""', "\t", "x" * 20_000, "word"]


def field(rng: random.Random) -> str:
    return "".join(
        rng.choice(PIECES) if rng.random() < 0.3 else rng.choice("abc xyz") for _ in range(rng.randint(0, 12))
    )


def fuzz_file(rng: random.Random, start: int) -> tuple[bytes, int]:
    """A CSV file (id,label,text) of random records as a careful writer quotes them, plus the record count."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "label", "text"])
    rows = rng.randint(1, 12)
    for i in range(rows):
        ident = (
            str(start + i) if rng.random() > 0.1 else rng.choice(["", str(start), " "])
        )  # blanks, duplicates
        writer.writerow([ident, rng.choice(["0", "1", "1", "0", "2", "", "yes"]), field(rng)])
        if rng.random() < 0.1:
            out.write("\n")  # a blank line
    data = out.getvalue().encode("utf-8")
    if rng.random() < 0.2:  # bytes that are not UTF-8 inside a record
        cut = rng.randint(len(data) // 2, len(data))
        data = data[:cut] + b"\xff\xfe" + data[cut:]
    return data, rows


def records(data: bytes) -> int:
    """What a careful reader counts: csv records after the header, blank lines aside."""
    text = data.decode("utf-8", errors="replace")
    return sum(1 for row in csv.reader(io.StringIO(text, newline="")) if row) - 1


def test_random_records_are_each_a_document_or_a_reject(spark, local_cfg, tmp_path):
    rng = random.Random(20261129)
    folder = tmp_path / "in"
    folder.mkdir()
    expected = 0
    for k in range(8):
        data, _ = fuzz_file(rng, 1000 * k)
        (folder / f"part-{k}.csv").write_bytes(data)
        expected += records(data)
    cut = tmp_path / "cut"  # a file that ends inside a quoted field, as a copy interrupted mid-way would
    cut.mkdir()
    (cut / "cut.csv").write_bytes(b'id,label,text\n1,0,"fine"\n2,1,"cut off here\n3,0,next\n')

    for source, count in ((folder, expected), (cut, None)):
        table, rejects = str(tmp_path / f"{source.name}-docs"), str(tmp_path / f"{source.name}-rejects")
        summary = run(spark, local_cfg, str(source), table, rejects, fmt="csv")
        assert summary.read == summary.added + summary.already_present + sum(summary.rejected.values())
        if count is not None:
            assert summary.read == count, summary.describe()
        docs = DeltaTable(table).to_pyarrow_table().to_pylist()
        rejected = (
            DeltaTable(rejects).to_pyarrow_table().to_pylist() if DeltaTable.is_deltatable(rejects) else []
        )
        assert len(docs) == summary.added and len(rejected) == sum(summary.rejected.values())
        assert len({d["id"] for d in docs}) == len(docs) and all(d["text"].strip() for d in docs)
        assert all(d["label"] in (0, 1) for d in docs)
        again = run(spark, local_cfg, str(source), table, rejects, fmt="csv")
        assert again.added == 0 and DeltaTable(table).to_pyarrow_table().num_rows == len(docs)
        assert DeltaTable(rejects).to_pyarrow_table().num_rows == len(rejected)  # each reject recorded once
    assert summary.rejected == {"unterminated quote opened at record 2, 1 line absorbed": 1}

    # the random documents through clean and embed (the project's model): each once, and once only
    from jobs import clean, embed

    docs, model = str(tmp_path / "in-docs"), str(ROOT / "models" / "elmo-tweets-small")
    ids = {d["id"] for d in DeltaTable(docs).to_pyarrow_table(columns=["id"]).to_pylist()}
    for _ in range(2):
        clean.run(spark, local_cfg, docs, str(tmp_path / "clean"))
        embed.run(spark, local_cfg, str(tmp_path / "clean"), str(tmp_path / "emb"), model)
        for table in ("clean", "emb"):
            got = DeltaTable(str(tmp_path / table)).to_pyarrow_table(columns=["id"]).column("id").to_pylist()
            assert sorted(got) == sorted(ids)
