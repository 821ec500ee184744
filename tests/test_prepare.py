"""Tests for ``python -m unger_recbole.data.prepare`` (dataset preparation)."""

from __future__ import annotations

import csv
import gzip
import json
import logging
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest

from unger_recbole.data import prepare as prep
from unger_recbole.data.prepare import PrepareError, main, prepare_dataset
from unger_recbole.data.sources import clean_text, has_html_entity, parse_categories

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("UNGER_SHARED_DATA", REPO / ".." / "shared" / "data"))
BEAUTY = SHARED / "amazon-beauty"

# --------------------------------------------------------------------------- helpers


def read_inter(path):
    """{user: [(timestamp, item), ...]} in file order, via a quote-aware TSV reader."""
    with open(path, encoding="utf-8", newline="") as f:
        r = csv.reader(f, delimiter="\t")
        assert next(r) == ["user_id:token", "item_id:token", "timestamp:float"]
        out = defaultdict(list)
        for u, i, t in r:
            out[u].append((float(t), i))
    return out


def read_item(path):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    header = [h.split(":")[0] for h in rows[0]]
    return rows[0], {r[0]: dict(zip(header, r)) for r in rows[1:]}


def recbole_load_feat(path, source):
    """Run RecBole 1.2.1's own ``Dataset._load_feat`` on ``path`` (no full Dataset/Config).

    The method is called on a bare instance carrying exactly the attributes it uses, with
    RecBole's default config values (tab field separator, space seq separator, encoding
    None), so the file goes through the very same header parsing and ``pandas.read_csv``
    call as in training.
    """
    from recbole.data.dataset import Dataset

    ds = Dataset.__new__(Dataset)
    ds.config = {
        "field_separator": "\t",
        "seq_separator": " ",
        "encoding": None,
        "load_col": None,
        "unload_col": None,
        "seq_len": None,
    }
    ds.logger = logging.getLogger("recbole-test")
    ds.field2source, ds.field2type, ds.field2seqlen, ds.field2bucketnum = {}, {}, {}, {}
    return Dataset._load_feat(ds, str(path), source)


def pandas_like_recbole(path):
    """The same read_csv call as RecBole's ``_load_feat`` (header parsed the same way)."""
    with open(path, "r", encoding=None) as f:
        head = f.readline()[:-1]
    usecols = head.split("\t")
    dtype = {c: (float if c.endswith(":float") else str) for c in usecols}
    df = pd.read_csv(path, delimiter="\t", usecols=usecols, dtype=dtype, encoding=None, engine="python")
    df.columns = [c.split(":")[0] for c in usecols]
    return df


def write_lines(path, lines):
    Path(path).write_text("".join(l + "\n" for l in lines), encoding="utf-8")


# --------------------------------------------------------------------------- Beauty (shared data)

needs_beauty = pytest.mark.skipif(
    not (BEAUTY / "user_sequence.txt").is_file(),
    reason=f"shared Beauty data not found at {BEAUTY} (set UNGER_SHARED_DATA to the shared/data folder)",
)


@pytest.fixture(scope="module")
def beauty(tmp_path_factory):
    if not (BEAUTY / "user_sequence.txt").is_file():
        pytest.skip(f"shared Beauty data not found at {BEAUTY} (set UNGER_SHARED_DATA)")
    out = tmp_path_factory.mktemp("prepared")
    stats = prepare_dataset("amazon-beauty", BEAUTY, out)
    folder = out / "amazon-beauty"
    seqs = [l.split() for l in (BEAUTY / "user_sequence.txt").read_text().splitlines() if l.strip()]
    return {
        "stats": stats,
        "inter": folder / "amazon-beauty.inter",
        "item": folder / "amazon-beauty.item",
        "seqs": seqs,
        "out": out,
    }


@needs_beauty
def test_beauty_stats(beauty):
    s = beauty["stats"]
    assert (s["users"], s["items"], s["interactions"]) == (22363, 12101, 198502)
    assert (s["seq_len_min"], s["seq_len_max"]) == (5, 204)
    assert round(s["seq_len_mean"], 3) == 8.876
    assert s["item_rows"] == 12101
    assert s["items_empty_title"] == 7
    assert s["interactions_empty_title"] == 198502 - 198371
    assert s["items_without_text_row"] == 0
    assert "position" in s["timestamp_scheme"]
    assert sorted(os.listdir(beauty["out"] / "amazon-beauty")) == ["amazon-beauty.inter", "amazon-beauty.item"]


@needs_beauty
def test_beauty_inter_order_matches_user_sequence(beauty):
    inter = read_inter(beauty["inter"])
    seqs = beauty["seqs"]
    assert len(inter) == len(seqs) == 22363
    for line in seqs:
        user, items = line[0], line[1:]
        rows = inter[user]
        ts = [t for t, _ in rows]
        # file order = sequence order, timestamps strictly increasing
        assert [i for _, i in rows] == items
        assert all(a < b for a, b in zip(ts, ts[1:])), user
        by_time = [i for _, i in sorted(rows)]
        assert by_time == items
        assert by_time[-1] == items[-1]  # leave-one-out test item
        assert by_time[-2] == items[-2]  # validation item
        for k, t in enumerate(ts):  # day + position
            assert t % 86400 == k


@needs_beauty
def test_beauty_real_days_attached(beauty):
    """Independent spot checks from SOURCES.md: (P5 user line, ASIN, unix day)."""
    inter = read_inter(beauty["inter"])
    seqs = beauty["seqs"]
    checks = [
        (1, "7806397051", 1391040000), (2, "7806397051", 1397779200),
        (3, "7806397051", 1378425600), (9, "9759091062", 1405209600),
        (20, "9788072216", 1316390400), (81, "B00004TUBV", 1403308800),
        (69, "B00004TUBV", 1378771200), (225, "B000052Y33", 1052611200),
    ]
    for line, asin, day in checks:
        user = seqs[line - 1][0]
        t = dict((i, t) for t, i in inter[user])[asin]
        assert t - t % 86400 == day


@needs_beauty
def test_beauty_item_file(beauty):
    header, items = read_item(beauty["item"])
    assert header == [
        "item_id:token", "title:token", "brand:token", "categories:token_seq",
        "price:float", "sales_rank:float",
    ]
    assert len(items) == 12101
    assert set(items) == {a for l in beauty["seqs"] for a in l[1:]}
    empty = {k for k, v in items.items() if not v["title"]}
    assert empty == {
        "B000GZES7A", "B001S3I57S", "B001RD37ZO", "B00ALHISAQ", "B00B4C35IW", "B001DJ2USM", "B001MP0T2Q",
    }
    for v in items.values():
        for f in ("title", "brand"):
            assert not has_html_entity(v[f]), v[f]
            assert "&amp;" not in v[f] and "&#39" not in v[f] and "&quot;" not in v[f]
            assert "\t" not in v[f] and "\n" not in v[f] and "\r" not in v[f]
            assert v[f] == v[f].strip() and "  " not in v[f]
    assert items["7806397051"]["categories"] == "Beauty Makeup Face Concealers_&_Neutralizers"
    assert items["7806397051"]["brand"] == "COKA"
    assert items["B000ABOLZ4"]["brand"] == "Kirk's Soap"  # double escape &amp;#39;
    assert items["B0001ZYL3Q"]["title"] == "TheraNeem Cream - Original Organix South 2 oz Cream Vanilla"
    assert items["9788072216"]["categories"] == "Beauty Fragrance Women's Eau_de_Parfum"


@needs_beauty
def test_beauty_through_recbole_reader(beauty):
    from recbole.utils import FeatureSource

    # expected titles: the source file read quote-aware, then cleaned
    with open(BEAUTY / "Amazon_Beauty.item", encoding="utf-8", newline="") as f:
        src = {r[0]: clean_text(r[1]) for r in list(csv.reader(f, delimiter="\t"))[1:]}
    assert any(t.startswith('"') for t in src.values())
    assert sum('"' in t[1:] for t in src.values()) > 100

    for df in (recbole_load_feat(beauty["item"], FeatureSource.ITEM), pandas_like_recbole(beauty["item"])):
        assert len(df) == 12101
        assert df["title"].notna().sum() == 12094
        got = dict(zip(df["item_id"], df["title"].fillna("")))
        assert got == src  # every title round-trips, quotes included
        starts = [k for k, t in got.items() if t.startswith('"')]
        middle = [k for k, t in got.items() if '"' in t[1:]]
        assert starts and middle
        assert got["B00IC7L3JK"].startswith('"Cucumber Delight" ANTI AGING')
    df = recbole_load_feat(beauty["item"], FeatureSource.ITEM)
    cats = dict(zip(df["item_id"], df["categories"]))
    assert list(cats["7806397051"]) == ["Beauty", "Makeup", "Face", "Concealers_&_Neutralizers"]
    assert df["price"].dtype == "float64" and df["sales_rank"].dtype == "float64"

    inter = recbole_load_feat(beauty["inter"], FeatureSource.INTERACTION)
    assert len(inter) == 198502
    assert inter["user_id"].nunique() == 22363 and inter["item_id"].nunique() == 12101
    last = inter.sort_values("timestamp", kind="stable").groupby("user_id")["item_id"].last()
    expected = {l[0]: l[-1] for l in beauty["seqs"]}
    assert last.to_dict() == expected


# --------------------------------------------------------------------------- synthetic P5 layout

ITEM_HEADER = "item_id:token\ttitle:token\tsales_type:token\tsales_rank:float\tcategories:token_seq\tprice:float\tbrand:token"


def make_p5(folder: Path, with_time=True, item_file="asin"):
    folder.mkdir(parents=True, exist_ok=True)
    seqs = [
        ["U1", "B2", "A1", "C3", "D4", "E5"],
        ["U2", "E5", "D4", "A1", "B2", "C3"],
        ["U3", "C3", "A1", "B2", "F6", "E5"],
    ]
    write_lines(folder / "user_sequence.txt", [" ".join(s) for s in seqs])
    if with_time:
        # Ti ids: sorted ASINs A1=1 B2=2 C3=3 D4=4 E5=5 F6=6.  Ti order differs from P5 order
        # inside same-day groups (U1: B2/A1 tie, U2: D4/A1/B2 tie).
        d = 86400
        write_lines(folder / "Toy_item.txt", ["1 1 2 3 4 5", "2 5 1 2 4 3", "3 3 1 2 6 5"])
        write_lines(
            folder / "Toy_time.txt",
            [
                f"1 {10*d} {10*d} {11*d} {11*d} {12*d}",
                f"2 {3*d} {4*d} {4*d} {4*d} {9*d}",
                f"3 {d} {d} {d} {d} {d}",
            ],
        )
    rows = [
        ["A1", '"Quoted" start of title', "Toys & Games", "12.0", "'Toys & Games', 'Puzzles'", "5.5", "Acme"],
        ["B2", 'Ruler 12" long &amp;amp; more', "", "", "'Toys & Games', \"Kids' Stuff\"", "", "null"],
        ["C3", "Tab\there and\nnewline  &quot;x&quot;", "Toys", "3.0", "'Toys'", "1", ""],
        ["D4", "Plain title", "", "", "", "", "N/A"],
        ["E5", "", "", "", "'Toys & Games'", "2.25", "Brand E"],
        ["Z9", "Item without interactions", "", "", "", "", ""],
    ]  # F6 has no row at all
    if item_file == "asin":
        with open(folder / "Amazon_Toy.item", "w", encoding="utf-8", newline="") as f:
            f.write(ITEM_HEADER + "\n")
            csv.writer(f, delimiter="\t", lineterminator="\n").writerows(rows)
    else:  # <Cat>.item keyed by P5 id + datamaps.json
        p5 = {"B2": "1", "A1": "2", "C3": "3", "D4": "4", "E5": "5", "F6": "6", "Z9": "7"}
        with open(folder / "Toy.item", "w", encoding="utf-8", newline="") as f:
            f.write("item_id:token\ttitle:token\tcategories:token_seq\n")
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            for r in rows:
                w.writerow([p5[r[0]], r[1], r[4]])
        (folder / "datamaps.json").write_text(json.dumps({"id2item": {v: k for k, v in p5.items()}}))
    return seqs


def test_p5_synthetic_order_timestamps_and_text(tmp_path):
    seqs = make_p5(tmp_path / "src")
    stats = prepare_dataset("toy", tmp_path / "src", tmp_path / "out")
    assert (stats["users"], stats["items"], stats["interactions"]) == (3, 6, 15)
    assert stats["items_without_text_row"] == 1  # F6
    assert stats["item_rows_dropped_no_interaction"] == 1  # Z9
    inter = read_inter(tmp_path / "out" / "toy" / "toy.inter")
    d = 86400
    for s in seqs:
        assert [i for _, i in inter[s[0]]] == s[1:]
        assert [i for _, i in sorted(inter[s[0]])] == s[1:]
    assert [t for t, _ in inter["U1"]] == [10 * d, 10 * d + 1, 11 * d + 2, 11 * d + 3, 12 * d + 4]
    assert [t for t, _ in inter["U2"]] == [3 * d, 4 * d + 1, 4 * d + 2, 4 * d + 3, 9 * d + 4]

    header, items = read_item(tmp_path / "out" / "toy" / "toy.item")
    assert header[0] == "item_id:token" and "sales_type:token" not in header
    assert list(items) == ["B2", "A1", "C3", "D4", "E5", "F6"]
    assert items["A1"]["title"] == '"Quoted" start of title'
    assert items["B2"]["title"] == 'Ruler 12" long & more'
    assert items["B2"]["brand"] == ""  # "null" -> empty
    assert items["B2"]["categories"] == "Toys_&_Games Kids'_Stuff"
    assert items["C3"]["title"] == 'Tab here and newline "x"'
    assert items["D4"]["brand"] == "" and items["D4"]["categories"] == ""
    assert items["F6"]["title"] == "" and items["F6"]["price"] == ""
    assert items["A1"]["price"] == "5.5" and items["A1"]["sales_rank"] == "12.0"

    from recbole.utils import FeatureSource

    df = recbole_load_feat(tmp_path / "out" / "toy" / "toy.item", FeatureSource.ITEM)
    titles = dict(zip(df["item_id"], df["title"]))
    assert titles["A1"] == '"Quoted" start of title'
    assert titles["B2"] == 'Ruler 12" long & more'
    assert titles["C3"] == 'Tab here and newline "x"'
    assert pd.isna(titles["E5"]) and pd.isna(titles["F6"])
    brands = dict(zip(df["item_id"], df["brand"]))
    assert pd.isna(brands["B2"]) and brands["E5"] == "Brand E"
    assert len(df) == 6 and pd.isna(dict(zip(df["item_id"], df["price"]))["F6"])


def test_p5_without_time_file_uses_position(tmp_path):
    seqs = make_p5(tmp_path / "src", with_time=False)
    stats = prepare_dataset("toy", tmp_path / "src", tmp_path / "out")
    assert stats["time_source"] is None and "no time file" in stats["timestamp_scheme"]
    inter = read_inter(tmp_path / "out" / "toy" / "toy.inter")
    for s in seqs:
        assert inter[s[0]] == [(float(k), i) for k, i in enumerate(s[1:])]


def test_p5_item_file_keyed_by_p5_id(tmp_path):
    make_p5(tmp_path / "src", item_file="p5id")
    stats = prepare_dataset("toy", tmp_path / "src", tmp_path / "out")
    assert stats["item_fields"] == ["title", "categories"]
    header, items = read_item(tmp_path / "out" / "toy" / "toy.item")
    assert header == ["item_id:token", "title:token", "categories:token_seq"]
    assert items["A1"]["title"] == '"Quoted" start of title'
    assert items["D4"]["title"] == "Plain title"
    assert items["F6"]["title"] == ""


def test_p5_item_file_keyed_by_p5_id_needs_datamaps(tmp_path, capsys):
    make_p5(tmp_path / "src", item_file="p5id")
    (tmp_path / "src" / "datamaps.json").unlink()
    assert main(["toy", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "out")]) != 0
    assert "datamaps.json" in capsys.readouterr().err
    assert not (tmp_path / "out" / "toy" / "toy.inter").exists()


def test_p5_timestamps_not_covering(tmp_path, capsys):
    make_p5(tmp_path / "src")
    d = 86400
    # user 3 lists item 4 (D4) instead of 6 (F6)
    write_lines(tmp_path / "src" / "Toy_item.txt", ["1 1 2 3 4 5", "2 5 1 2 4 3", "3 3 1 2 4 5"])
    with pytest.raises(PrepareError, match="do not cover"):
        prepare_dataset("toy", tmp_path / "src", tmp_path / "out")
    # a user missing from the time files
    write_lines(tmp_path / "src" / "Toy_item.txt", ["1 1 2 3 4 5", "2 5 1 2 4 3"])
    write_lines(tmp_path / "src" / "Toy_time.txt", [f"1 {d} {d} {d} {d} {d}", f"2 {d} {d} {d} {d} {d}"])
    assert main(["toy", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert "do not cover" in err and "U3" in err
    assert not (tmp_path / "out" / "toy").exists() or not os.listdir(tmp_path / "out" / "toy")


def test_p5_time_order_conflict(tmp_path):
    make_p5(tmp_path / "src")
    d = 86400
    # U3's P5 order C3 A1 ... but A1 (id 1) is a day earlier than C3 (id 3)
    write_lines(
        tmp_path / "src" / "Toy_time.txt",
        [f"1 {10*d} {10*d} {11*d} {11*d} {12*d}", f"2 {3*d} {4*d} {4*d} {4*d} {9*d}", f"3 {2*d} {d} {2*d} {2*d} {2*d}"],
    )
    write_lines(tmp_path / "src" / "Toy_item.txt", ["1 1 2 3 4 5", "2 5 1 2 4 3", "3 3 1 2 6 5"])
    with pytest.raises(PrepareError, match="decrease"):
        prepare_dataset("toy", tmp_path / "src", tmp_path / "out")


def test_missing_files_errors(tmp_path, capsys):
    out = str(tmp_path / "out")
    # missing source folder
    assert main(["toy", "--source", str(tmp_path / "nope"), "--out", out]) != 0
    err = capsys.readouterr().err
    assert "does not exist" in err and "user_sequence.txt" in err and "reviews_<Cat>_5.json.gz" in err
    # empty folder
    (tmp_path / "empty").mkdir()
    assert main(["toy", "--source", str(tmp_path / "empty"), "--out", out]) != 0
    err = capsys.readouterr().err
    assert "user_sequence.txt" in err and "reviews_<Cat>_5.json.gz" in err
    # P5 without item file
    make_p5(tmp_path / "p5")
    (tmp_path / "p5" / "Amazon_Toy.item").unlink()
    assert main(["toy", "--source", str(tmp_path / "p5"), "--out", out]) != 0
    err = capsys.readouterr().err
    assert "Amazon_<Cat>.item" in err and "ASIN" in err
    # Ti time file without its item file
    make_p5(tmp_path / "p5b")
    (tmp_path / "p5b" / "Toy_item.txt").unlink()
    assert main(["toy", "--source", str(tmp_path / "p5b"), "--out", out]) != 0
    assert "Toy_item.txt" in capsys.readouterr().err
    # raw reviews without meta
    (tmp_path / "raw").mkdir()
    with gzip.open(tmp_path / "raw" / "reviews_Toy_5.json.gz", "wt") as f:
        f.write(json.dumps({"reviewerID": "U", "asin": "I", "unixReviewTime": 0}) + "\n")
    assert main(["toy", "--source", str(tmp_path / "raw"), "--out", out]) != 0
    err = capsys.readouterr().err
    assert "meta_Toy.json.gz" in err and "Python-literal" in err
    assert not os.path.exists(os.path.join(out, "toy", "toy.inter"))


def test_cli_user_error_has_no_traceback(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "unger_recbole.data.prepare", "toy", "--source", str(tmp_path / "nope"),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=REPO,
    )
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and r.stderr.startswith("error:")
    assert "user_sequence.txt" in r.stderr
    assert r.stdout == ""


def test_cli_success_prints_stats(tmp_path, capsys):
    make_p5(tmp_path / "src")
    assert main(["toy", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    for word in ("users", "items", "interactions", "seq length", "empty title", "timestamp", "position"):
        assert word in out


def test_nothing_half_written(tmp_path, monkeypatch):
    make_p5(tmp_path / "src")
    folder = tmp_path / "out" / "toy"
    prepare_dataset("toy", tmp_path / "src", tmp_path / "out")
    before = {p: (folder / p).read_bytes() for p in ("toy.inter", "toy.item")}
    real_open_tmp = prep._open_tmp
    calls = []

    def failing_open_tmp(folder_, final_name):
        calls.append(final_name)
        if final_name.endswith(".item"):
            raise OSError("disk full (simulated)")
        return real_open_tmp(folder_, final_name)

    monkeypatch.setattr(prep, "_open_tmp", failing_open_tmp)
    with pytest.raises(OSError, match="simulated"):
        prepare_dataset("toy", tmp_path / "src", tmp_path / "out")
    assert calls == ["toy.inter", "toy.item"]
    assert sorted(os.listdir(folder)) == ["toy.inter", "toy.item"]  # no temp files left
    assert {p: (folder / p).read_bytes() for p in before} == before


# --------------------------------------------------------------------------- synthetic raw McAuley layout


def make_raw(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    d = 86400
    reviews = []
    core_users = [f"U{k}" for k in range(1, 6)]
    core_items = [f"I{k}" for k in range(1, 6)]
    for n, u in enumerate(core_users):
        for m, i in enumerate(core_items):
            reviews.append((u, i, (100 + 5 * n + m) * d))
    # U1: I2 and I1 on the same day, I2 first in the file -> stable order keeps I2 first
    reviews = [r for r in reviews if not (r[0] == "U1" and r[1] in ("I1", "I2"))]
    reviews = [("U1", "I2", 50 * d), ("U1", "I1", 50 * d)] + reviews
    # U6 has 5 interactions, but X1 only has one -> X1 dropped -> U6 has 4 -> dropped (2nd round)
    reviews += [("U6", i, 200 * d) for i in ("I1", "I2", "I3", "I4")] + [("U6", "X1", 201 * d)]
    # U7 has only 3
    reviews += [("U7", i, 300 * d) for i in ("I1", "I2", "I3")]
    with gzip.open(folder / "reviews_Toy_5.json.gz", "wt", encoding="utf-8") as f:
        for u, i, t in reviews:
            f.write(json.dumps({"reviewerID": u, "asin": i, "overall": 5.0, "unixReviewTime": t,
                                "reviewTime": "01 1, 2000"}) + "\n")
    meta = [
        {"asin": "I1", "title": '"Best" soap &amp;amp; more', "brand": "Acme", "price": 5.5,
         "salesRank": {"Beauty": 123}, "categories": [["Beauty", "Skin Care"], ["Beauty", "Face"]]},
        {"asin": "I2", "title": 'Ruler 12" long\twith tab', "categories": [["Toys & Games"]], "imUrl": "http://x"},
        {"asin": "I3", "title": "Kirk's", "brand": "Kirk&amp;#39;s", "categories": [[]], "salesRank": {}},
        {"asin": "I4", "related": {"also_bought": ["I1"]}, "categories": [["Beauty"]]},
        {"asin": "X1", "title": "dropped by 5-core"},
        {"asin": "Q9", "title": "unrelated item"},
    ]  # I5 has no meta line
    with gzip.open(folder / "meta_Toy.json.gz", "wt", encoding="utf-8") as f:
        for m in meta:
            f.write(repr(m) + "\n")  # python literal, as in the 2014 meta files
    return reviews


def test_raw_mcauley_kcore_order_and_meta(tmp_path):
    make_raw(tmp_path / "raw")
    stats = prepare_dataset("toy", tmp_path / "raw", tmp_path / "out")
    assert stats["layout"] == "raw"
    assert (stats["users"], stats["items"], stats["interactions"]) == (5, 5, 25)
    assert stats["items_without_text_row"] == 1  # I5
    inter = read_inter(tmp_path / "out" / "toy" / "toy.inter")
    assert list(inter) == ["U1", "U2", "U3", "U4", "U5"]
    assert "U6" not in inter and "U7" not in inter
    d = 86400
    assert inter["U1"] == [(50 * d, "I2"), (50 * d + 1, "I1"), (102 * d + 2, "I3"), (103 * d + 3, "I4"),
                           (104 * d + 4, "I5")]
    for rows in inter.values():
        ts = [t for t, _ in rows]
        assert all(a < b for a, b in zip(ts, ts[1:]))

    header, items = read_item(tmp_path / "out" / "toy" / "toy.item")
    assert header == ["item_id:token", "title:token", "brand:token", "categories:token_seq",
                      "price:float", "sales_rank:float"]
    assert set(items) == {"I1", "I2", "I3", "I4", "I5"}
    assert items["I1"] == {"item_id": "I1", "title": '"Best" soap & more', "brand": "Acme",
                           "categories": "Beauty Skin_Care Face", "price": "5.5", "sales_rank": "123.0"}
    assert items["I2"]["title"] == 'Ruler 12" long with tab'
    assert items["I2"]["categories"] == "Toys_&_Games"
    assert items["I3"]["brand"] == "Kirk's" and items["I3"]["sales_rank"] == ""
    assert items["I4"]["title"] == "" and items["I5"]["title"] == ""

    from recbole.utils import FeatureSource

    df = recbole_load_feat(tmp_path / "out" / "toy" / "toy.item", FeatureSource.ITEM)
    titles = dict(zip(df["item_id"], df["title"]))
    assert titles["I1"] == '"Best" soap & more' and titles["I2"] == 'Ruler 12" long with tab'
    assert list(dict(zip(df["item_id"], df["categories"]))["I1"]) == ["Beauty", "Skin_Care", "Face"]


def test_raw_kcore_can_empty_everything(tmp_path):
    (tmp_path / "raw").mkdir()
    with gzip.open(tmp_path / "raw" / "reviews_Toy_5.json.gz", "wt") as f:
        f.write(json.dumps({"reviewerID": "U", "asin": "I", "unixReviewTime": 0}) + "\n")
    with gzip.open(tmp_path / "raw" / "meta_Toy.json.gz", "wt") as f:
        f.write(repr({"asin": "I", "title": "x"}) + "\n")
    with pytest.raises(PrepareError, match="5-core"):
        prepare_dataset("toy", tmp_path / "raw", tmp_path / "out")


# --------------------------------------------------------------------------- helpers' units


def test_clean_text_and_categories():
    assert clean_text("A &amp;amp; B") == "A & B"
    assert clean_text("Kirk&amp;#39;s") == "Kirk's"
    assert clean_text("XIUstyle&amp;#8482 Brush") == "XIUstyle\u2122 Brush"
    assert clean_text("Rinehart\u00c2\u00ae Target") == "Rinehart\u00ae Target"
    assert clean_text("caf\u00e9 \u00c2 ok") == "caf\u00e9 \u00c2 ok"  # not mojibake: unchanged
    assert clean_text(" a\t b\r\nc  ") == "a b c"
    assert clean_text("null") == "" and clean_text("N/A") == "" and clean_text(None) == ""
    assert parse_categories("'Beauty', 'Makeup', 'Face', 'Concealers & Neutralizers'") == [
        "Beauty", "Makeup", "Face", "Concealers & Neutralizers"]
    assert parse_categories("'Beauty', \"Women's\"") == ["Beauty", "Women's"]
    assert parse_categories([["Beauty", "Skin Care"], ["Beauty", "Home &amp; Kitchen"]]) == [
        "Beauty", "Skin Care", "Home & Kitchen"]
    assert parse_categories("Beauty Makeup") == ["Beauty", "Makeup"]
    assert parse_categories("") == []
