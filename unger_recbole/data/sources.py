"""Readers for the source layouts accepted by :mod:`unger_recbole.data.prepare`.

Two layouts are understood (see ``prepare.py`` for the full description):

* **P5 layout** -- ``user_sequence.txt`` (one user per line: ``reviewerID asin_1 ... asin_n``
  in P5 order), an item text file (``Amazon_<Cat>.item`` keyed by ASIN, or ``<Cat>.item``
  keyed by P5 integer id together with ``datamaps.json``), and optionally the TiICSRec
  timestamp pair ``<Cat>_item.txt`` / ``<Cat>_time.txt``.
* **Raw McAuley 2014 layout** -- ``reviews_<Cat>_5.json.gz`` (one JSON object per line) and
  ``meta_<Cat>.json.gz`` (one Python-literal dict per line).

Every reader returns a :class:`Source`: the users in output order, each user's item sequence in
the order that must be kept, optional per-interaction Unix times, and the item text fields.
All problems with the input are reported as :class:`PrepareError` (a user error: the CLI
prints the message without a traceback).
"""

from __future__ import annotations

import ast
import csv
import glob
import gzip
import html
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

# Output item fields, in the order they are written (only those the source has).
ITEM_FIELDS = ("title", "brand", "categories", "price", "sales_rank")
FLOAT_FIELDS = ("price", "sales_rank")

# Source column name (atomic-file header, before ':') -> output field.
_ITEM_COLUMN_ALIASES = {
    "title": "title",
    "brand": "brand",
    "categories": "categories",
    "category": "categories",
    "price": "price",
    "sales_rank": "sales_rank",
    "salesrank": "sales_rank",
}

# Strings that pandas.read_csv turns into NaN by default (RecBole does not pass
# keep_default_na=False).  A text cell equal to one of them would not round-trip, and in
# the Amazon data such values ("null" titles, "N/A" brands) mean "missing" anyway, so they
# are written as empty cells.
PANDAS_NA_STRINGS = frozenset(
    [
        "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
        "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
    ]
)

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MOJIBAKE = re.compile("[\u00c2\u00c3][\u0080-\u00bf]")
_ENTITY = re.compile(r"&(#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);?")


class PrepareError(Exception):
    """A problem with the user's input (missing file, bad format, inconsistent data)."""


@dataclass
class Source:
    """What a layout reader extracts from a source folder."""

    layout: str
    users: List[str]
    sequences: List[List[str]]
    # Unix seconds per interaction, aligned with ``sequences``; None = no time information.
    times: Optional[List[List[int]]]
    time_source: Optional[str]
    # asin -> {field: value}; text fields are cleaned str, categories a list of str,
    # floats a float or None.
    items: Dict[str, dict]
    item_fields: List[str]
    item_source: str
    files: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


# --------------------------------------------------------------------------- text cleaning


def _fix_mojibake(s: str) -> str:
    """Repair UTF-8 text that was decoded as Latin-1/cp1252 (``Â®`` -> ``®``), only when the
    repair is exact; anything else is returned unchanged."""
    if not _MOJIBAKE.search(s):
        return s
    for codec in ("cp1252", "latin-1"):
        try:
            return s.encode(codec).decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            continue
    return s


def clean_text(value) -> str:
    """Normalise one text cell.

    HTML entities are unescaped until stable (at most 3 rounds, which handles double escapes
    such as ``&amp;#39;``), exact Latin-1 mojibake is repaired, control characters (tab,
    newline, carriage return, ...) become spaces, whitespace is collapsed and stripped, and
    values that pandas reads as NaN (``null``, ``N/A``, ...) become empty.
    """
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    s = str(value)
    for _ in range(3):
        if "&" not in s:
            break
        u = html.unescape(s)
        if u == s:
            break
        s = u
    s = _fix_mojibake(s)
    s = _CONTROL_CHARS.sub(" ", s)
    s = " ".join(s.split())
    if s in PANDAS_NA_STRINGS:
        return ""
    return s


def has_html_entity(s: str) -> bool:
    return bool(_ENTITY.search(s)) and html.unescape(s) != s


def parse_categories(value) -> List[str]:
    """Parse a categories cell into a flat list of cleaned category names.

    Accepts a Python list-literal body (``'Beauty', 'Makeup', 'Face'`` -- the atomic files'
    format), a full list or list of lists (McAuley meta), or an already space-separated token
    sequence.  Duplicates are removed, first occurrence kept.
    """
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        parsed = None
        for candidate in (f"[{text}]", text):
            try:
                parsed = ast.literal_eval(candidate)
                break
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                continue
        if parsed is None or isinstance(parsed, (int, float)):
            parsed = text.split()
        value = parsed
    flat: List[str] = []

    def walk(v):
        if isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        elif v is not None:
            flat.append(str(v))

    walk(value)
    out: List[str] = []
    seen = set()
    for c in flat:
        c = clean_text(c)
        if c and c not in seen:
            seen.add(c)
            out.append(c)
    return out


def parse_float(value) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip().replace(",", "")
        if value.startswith("$"):
            value = value[1:]
        if not value:
            return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(f) or math.isinf(f):
        return None
    return f


# --------------------------------------------------------------------------- helpers


def _rel(path: str) -> str:
    return os.path.basename(path)


def _open_text(path: str):
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, "r", encoding="utf-8")


def _single(pattern_desc: str, paths: List[str]) -> Optional[str]:
    if len(paths) > 1:
        raise PrepareError(
            f"several {pattern_desc} files found, expected one: "
            + ", ".join(sorted(_rel(p) for p in paths))
        )
    return paths[0] if paths else None


# --------------------------------------------------------------------------- layout detection

P5_FORMAT = (
    "P5 layout: user_sequence.txt (one user per line: 'reviewerID asin_1 ... asin_n' in "
    "chronological P5 order) + an item file (Amazon_<Cat>.item keyed by ASIN, or <Cat>.item "
    "keyed by P5 integer id plus datamaps.json with 'id2item'), optionally <Cat>_item.txt + "
    "<Cat>_time.txt (TiICSRec timestamps: 'uid item_1 ... item_n' / 'uid t_1 ... t_n')"
)
RAW_FORMAT = (
    "raw McAuley 2014 layout: reviews_<Cat>_5.json.gz (one JSON object per line with "
    "reviewerID, asin, unixReviewTime) + meta_<Cat>.json.gz (one Python-literal dict per line "
    "with asin, title, brand, categories, price, salesRank)"
)


def detect_layout(source: str) -> str:
    if not os.path.exists(source):
        raise PrepareError(
            f"source folder '{source}' does not exist. Expected a folder in the {P5_FORMAT}; "
            f"or in the {RAW_FORMAT}"
        )
    if not os.path.isdir(source):
        raise PrepareError(f"source '{source}' is not a folder")
    if os.path.isfile(os.path.join(source, "user_sequence.txt")):
        return "p5"
    if _raw_review_files(source):
        return "raw"
    raise PrepareError(
        f"no recognised dataset in '{source}': looked for user_sequence.txt ({P5_FORMAT}) and "
        f"for reviews_<Cat>_5.json.gz ({RAW_FORMAT})"
    )


def read_source(source: str) -> Source:
    layout = detect_layout(source)
    if layout == "p5":
        return read_p5(source)
    return read_raw(source)


# --------------------------------------------------------------------------- P5 layout


def _read_user_sequence(path: str):
    users: List[str] = []
    seqs: List[List[str]] = []
    seen = set()
    with open(path, "r", encoding="utf-8") as f:
        lines = f.read().split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    for lineno, line in enumerate(lines, 1):
        toks = line.split()
        if len(toks) < 2:
            raise PrepareError(
                f"{_rel(path)} line {lineno}: expected 'reviewerID asin_1 ... asin_n' "
                f"(line k is P5 user k), got {line[:80]!r}"
            )
        if toks[0] in seen:
            raise PrepareError(f"{_rel(path)} line {lineno}: user {toks[0]} appears twice")
        seen.add(toks[0])
        users.append(toks[0])
        seqs.append(toks[1:])
    if not users:
        raise PrepareError(f"{_rel(path)} is empty; expected 'reviewerID asin_1 ... asin_n' lines")
    return users, seqs


def _read_ti_lines(path: str, kind: str) -> Dict[int, List[int]]:
    out: Dict[int, List[int]] = {}
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            toks = line.split()
            if not toks:
                continue
            try:
                vals = [int(t) for t in toks]
            except ValueError:
                raise PrepareError(
                    f"{_rel(path)} line {lineno}: expected integers 'uid {kind}_1 ... {kind}_n'"
                ) from None
            if vals[0] in out:
                raise PrepareError(f"{_rel(path)} line {lineno}: user id {vals[0]} appears twice")
            out[vals[0]] = vals[1:]
    return out


def _join_ti_times(users, seqs, item_path, time_path) -> List[List[int]]:
    """Attach TiICSRec timestamps to the P5 sequences by (user, ASIN).

    Ti user id = line number in user_sequence.txt; Ti item id k = k-th ASIN of the sorted set
    of all ASINs (see SOURCES.md).  Repeated (user, ASIN) pairs, if any, are matched by
    occurrence in time order.
    """
    ti_items = _read_ti_lines(item_path, "item")
    ti_times = _read_ti_lines(time_path, "t")
    asins = sorted({a for s in seqs for a in s})
    missing_users = []
    bad = []  # (user, asin) without timestamp
    extra = 0
    times: List[List[int]] = []
    for k, (user, seq) in enumerate(zip(users, seqs), 1):
        its = ti_items.get(k)
        tts = ti_times.get(k)
        if its is None or tts is None:
            missing_users.append(user)
            times.append([])
            continue
        if len(its) != len(tts):
            raise PrepareError(
                f"{_rel(item_path)} and {_rel(time_path)} disagree for user id {k}: "
                f"{len(its)} items vs {len(tts)} timestamps"
            )
        pool: Dict[str, List[int]] = {}
        for x, t in zip(its, tts):
            if not 1 <= x <= len(asins):
                raise PrepareError(
                    f"{_rel(item_path)}: item id {x} (user id {k}) is outside 1..{len(asins)}; "
                    "Ti item id k must be the k-th ASIN in the sorted list of distinct ASINs of "
                    "user_sequence.txt"
                )
            pool.setdefault(asins[x - 1], []).append(t)
        for v in pool.values():
            v.sort(reverse=True)  # pop() gives the earliest
        row = []
        for a in seq:
            v = pool.get(a)
            if not v:
                bad.append((user, a))
                row.append(0)
            else:
                row.append(v.pop())
        extra += sum(len(v) for v in pool.values())
        times.append(row)
    if missing_users or bad or extra:
        parts = []
        if missing_users:
            parts.append(f"{len(missing_users)} users have no line (first: {missing_users[0]})")
        if bad:
            parts.append(
                f"{len(bad)} (user, ASIN) interactions have no timestamp (first: {bad[0][0]}, {bad[0][1]})"
            )
        if extra:
            parts.append(f"{extra} timestamp entries match no interaction of user_sequence.txt")
        raise PrepareError(
            f"timestamps in {_rel(item_path)}/{_rel(time_path)} do not cover user_sequence.txt: "
            + "; ".join(parts)
            + ". Expected Ti user id = line number in user_sequence.txt and Ti item id k = k-th "
            "ASIN in sorted order, with exactly one timestamp per (user, ASIN) interaction."
        )
    return times


def _read_atomic_item_file(path: str):
    """Read a RecBole-style atomic .item file with a quote-aware TSV reader.

    Returns (key_column_values, {key: {field: raw}}, fields_present, ignored_columns)."""
    with open(path, "r", encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        try:
            header = next(reader)
        except StopIteration:
            raise PrepareError(f"{_rel(path)} is empty; expected a RecBole atomic .item file") from None
        names = [h.split(":", 1)[0].strip() for h in header]
        if "item_id" not in names:
            raise PrepareError(
                f"{_rel(path)}: header must contain 'item_id:token' (RecBole atomic .item file, "
                f"tab-separated, header 'name:type'); got {header}"
            )
        key_col = names.index("item_id")
        colmap = {}
        ignored = []
        for i, n in enumerate(names):
            if i == key_col:
                continue
            fld = _ITEM_COLUMN_ALIASES.get(n.lower())
            if fld and fld not in colmap.values():
                colmap[i] = fld
            else:
                ignored.append(n)
        rows: Dict[str, dict] = {}
        for lineno, row in enumerate(reader, 2):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                raise PrepareError(
                    f"{_rel(path)} record {lineno}: {len(row)} fields, header has {len(header)}"
                )
            key = row[key_col].strip()
            if key in rows:
                continue  # keep the first, as RecBole does
            rows[key] = {fld: row[i] for i, fld in colmap.items()}
    fields = [f for f in ITEM_FIELDS if f in colmap.values()]
    return rows, fields, ignored


def _normalise_item(raw: dict, fields) -> dict:
    out = {}
    for f in fields:
        v = raw.get(f)
        if f == "categories":
            out[f] = parse_categories(v)
        elif f in FLOAT_FIELDS:
            out[f] = parse_float(v)
        else:
            out[f] = clean_text(v)
    return out


def read_p5(source: str) -> Source:
    seq_path = os.path.join(source, "user_sequence.txt")
    users, seqs = _read_user_sequence(seq_path)
    files = [seq_path]
    notes: List[str] = []

    # --- timestamps (optional)
    time_files = sorted(glob.glob(os.path.join(source, "*_time.txt")))
    time_path = _single("*_time.txt", time_files)
    times = None
    time_source = None
    if time_path:
        cat = _rel(time_path)[: -len("_time.txt")]
        item_path = os.path.join(source, f"{cat}_item.txt")
        if not os.path.isfile(item_path):
            raise PrepareError(
                f"found {_rel(time_path)} but not {cat}_item.txt in '{source}': TiICSRec "
                "timestamps need both line-aligned files ('uid item_1 ... item_n' and "
                "'uid t_1 ... t_n')"
            )
        times = _join_ti_times(users, seqs, item_path, time_path)
        time_source = f"{_rel(item_path)} + {_rel(time_path)}"
        files += [item_path, time_path]
    else:
        orphan = sorted(glob.glob(os.path.join(source, "*_item.txt")))
        if orphan:
            cat = _rel(orphan[0])[: -len("_item.txt")]
            raise PrepareError(
                f"found {_rel(orphan[0])} but not {cat}_time.txt in '{source}': TiICSRec "
                "timestamps need both line-aligned files ('uid item_1 ... item_n' and "
                "'uid t_1 ... t_n')"
            )

    # --- item text
    all_items = {a for s in seqs for a in s}
    amazon = sorted(glob.glob(os.path.join(source, "Amazon_*.item")))
    item_path = _single("Amazon_*.item", amazon)
    keyed_by = "asin"
    if item_path is None:
        others = sorted(glob.glob(os.path.join(source, "*.item")))
        item_path = _single("*.item", others)
        keyed_by = "p5id"
    if item_path is None:
        raise PrepareError(
            f"no item file in '{source}': looked for Amazon_<Cat>.item (RecBole atomic .item "
            "keyed by ASIN: 'item_id:token<TAB>title:token<TAB>...') or <Cat>.item (keyed by P5 "
            "integer id, with datamaps.json)"
        )
    rows, fields, ignored = _read_atomic_item_file(item_path)
    files.append(item_path)
    if keyed_by == "p5id":
        dm_path = os.path.join(source, "datamaps.json")
        asin_hits = sum(1 for k in rows if k in all_items)
        if os.path.isfile(dm_path):
            try:
                with open(dm_path, "r", encoding="utf-8") as f:
                    id2item = json.load(f)["id2item"]
            except (ValueError, KeyError, TypeError) as e:
                raise PrepareError(
                    f"{_rel(dm_path)}: expected a JSON object with 'id2item' {{\"P5 id\": asin}} ({e})"
                ) from None
            id_hits = sum(1 for k in rows if id2item.get(k) in all_items)
            if id_hits >= asin_hits:
                mapped = {}
                unmapped = 0
                for k, v in rows.items():
                    a = id2item.get(k)
                    if a is None:
                        unmapped += 1
                    elif a not in mapped:
                        mapped[a] = v
                if unmapped:
                    notes.append(f"{unmapped} rows of {_rel(item_path)} have no id2item entry (dropped)")
                rows = mapped
                files.append(dm_path)
                notes.append(f"{_rel(item_path)} keyed by P5 id, mapped to ASIN via datamaps.json id2item")
            else:
                keyed_by = "asin"
        elif asin_hits * 2 >= len(rows) and asin_hits > 0:
            keyed_by = "asin"
        else:
            raise PrepareError(
                f"{_rel(item_path)} is keyed by P5 integer ids but '{source}' has no datamaps.json "
                "(JSON object with 'id2item' {\"P5 id\": asin}) to map them to ASINs"
            )
    if ignored:
        notes.append(f"item columns not used: {', '.join(ignored)}")
    items = {k: _normalise_item(v, fields) for k, v in rows.items()}
    return Source(
        layout="p5",
        users=users,
        sequences=seqs,
        times=times,
        time_source=time_source,
        items=items,
        item_fields=fields,
        item_source=_rel(item_path),
        files=files,
        notes=notes,
    )


# --------------------------------------------------------------------------- raw McAuley layout


def _raw_review_files(source: str) -> List[str]:
    pats = ("reviews_*_5.json.gz", "reviews_*_5.json")
    out = []
    for p in pats:
        out += glob.glob(os.path.join(source, p))
    return sorted(out)


_ASIN_RE = re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"]+)['"]""")


def _read_meta(path: str, wanted: set) -> Dict[str, dict]:
    meta: Dict[str, dict] = {}
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            m = _ASIN_RE.search(line)
            if m and m.group(1) not in wanted:
                continue
            try:
                d = json.loads(line)
            except ValueError:
                try:
                    d = ast.literal_eval(line)
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    raise PrepareError(
                        f"{_rel(path)} line {lineno}: not a Python-literal dict (expected "
                        "{'asin': ..., 'title': ..., 'categories': [[...]], ...})"
                    ) from None
            if not isinstance(d, dict) or "asin" not in d:
                raise PrepareError(f"{_rel(path)} line {lineno}: dict with an 'asin' key expected")
            a = str(d["asin"])
            if a in wanted and a not in meta:
                meta[a] = d
    return meta


def _raw_item(d: dict) -> dict:
    rank = None
    sr = d.get("salesRank")
    if isinstance(sr, dict) and sr:
        rank = next(iter(sr.values()))
    elif isinstance(sr, (int, float, str)):
        rank = sr
    return {
        "title": clean_text(d.get("title")),
        "brand": clean_text(d.get("brand")),
        "categories": parse_categories(d.get("categories")),
        "price": parse_float(d.get("price")),
        "sales_rank": parse_float(rank),
    }


def kcore_filter(rows, k: int):
    """Iteratively drop interactions until every user and item has >= k of them."""
    while True:
        uc: Dict[str, int] = {}
        ic: Dict[str, int] = {}
        for u, i, _ in rows:
            uc[u] = uc.get(u, 0) + 1
            ic[i] = ic.get(i, 0) + 1
        kept = [r for r in rows if uc[r[0]] >= k and ic[r[1]] >= k]
        if len(kept) == len(rows):
            return kept
        rows = kept


def read_raw(source: str, min_inter: int = 5) -> Source:
    rev_path = _single("reviews_<Cat>_5.json.gz", _raw_review_files(source))
    base = _rel(rev_path)
    cat = base[len("reviews_"):].split("_5.json")[0]
    meta_path = None
    for cand in (f"meta_{cat}.json.gz", f"meta_{cat}.json"):
        p = os.path.join(source, cand)
        if os.path.isfile(p):
            meta_path = p
            break
    if meta_path is None:
        raise PrepareError(
            f"missing meta_{cat}.json.gz in '{source}' (needed with {base}): expected one "
            "Python-literal dict per line with asin, title, brand, categories (list of lists), "
            "price, salesRank {category: rank}"
        )
    rows = []
    with _open_text(rev_path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                d = json.loads(line)
                rows.append((str(d["reviewerID"]), str(d["asin"]), int(d["unixReviewTime"])))
            except (ValueError, KeyError, TypeError):
                raise PrepareError(
                    f"{base} line {lineno}: expected a JSON object with reviewerID, asin and "
                    "unixReviewTime"
                ) from None
    n_raw = len(rows)
    rows = kcore_filter(rows, min_inter)
    if not rows:
        raise PrepareError(f"{base}: no interactions left after the {min_inter}-core filter")
    by_user: Dict[str, list] = {}
    for u, i, t in rows:  # dict keeps users in order of first appearance
        by_user.setdefault(u, []).append((t, i))
    users, seqs, times = [], [], []
    for u, lst in by_user.items():
        lst.sort(key=lambda x: x[0])  # stable: ties keep file order
        users.append(u)
        seqs.append([i for _, i in lst])
        times.append([t for t, _ in lst])
    wanted = {i for s in seqs for i in s}
    meta = _read_meta(meta_path, wanted)
    items = {a: _raw_item(d) for a, d in meta.items()}
    notes = [f"{min_inter}-core filter: {n_raw} -> {len(rows)} interactions"]
    return Source(
        layout="raw",
        users=users,
        sequences=seqs,
        times=times,
        time_source=f"{base} unixReviewTime",
        items=items,
        item_fields=list(ITEM_FIELDS),
        item_source=_rel(meta_path),
        files=[rev_path, meta_path],
        notes=notes,
    )
