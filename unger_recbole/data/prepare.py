"""Prepare an Amazon dataset as RecBole atomic files.

Usage::

    python -m unger_recbole.data.prepare <name> --source <folder> --out dataset/

writes ``dataset/<name>/<name>.inter`` and ``dataset/<name>/<name>.item`` and prints
statistics.  Python API: :func:`prepare_dataset` ``(name, source, out_dir) -> dict``.

Source layouts (auto-detected, see :mod:`unger_recbole.data.sources`)
-----------------------------------------------------------------------
* **P5 layout**: ``user_sequence.txt`` (``reviewerID asin_1 ... asin_n`` per line, P5 order),
  an item file (``Amazon_<Cat>.item`` keyed by ASIN, or ``<Cat>.item`` keyed by P5 integer id
  + ``datamaps.json``), optionally the TiICSRec timestamp files ``<Cat>_item.txt`` +
  ``<Cat>_time.txt`` joined by (user, ASIN) as described in ``shared/data/SOURCES.md``.
* **Raw McAuley 2014**: ``reviews_<Cat>_5.json.gz`` + ``meta_<Cat>.json.gz``.  Interactions are
  5-core filtered (iterated until every user and item has >= 5), grouped by user (users in
  order of first appearance) and stably sorted by ``unixReviewTime`` (ties keep file order).

Timestamp scheme (``.inter`` ``timestamp:float``)
-------------------------------------------------
``timestamp = day + position`` where ``day`` is the interaction's Unix time floored to a
whole day (``t - t % 86400``; Amazon review times already are UTC midnights) and
``position`` is the 0-based index of the interaction in the user's sequence, in seconds.
Because every sequence is shorter than 86400, a position never reaches the next day, so the
timestamps strictly increase along each user's sequence and sorting by timestamp reproduces
*exactly* the P5 order of ``user_sequence.txt``, including same-day ties (RecBole's
leave-one-out split therefore gives the papers' test/validation items).  Without a time
file, ``timestamp = position``.  If the known days decrease along a user's sequence the
order cannot be kept and preparation fails.

``.inter`` rows are grouped by user, users in source order, each user's rows in sequence
order; ids are the original reviewerID / ASIN strings.

``.item`` file
--------------
``item_id:token`` followed by those of ``title:token``, ``brand:token``,
``categories:token_seq``, ``price:float``, ``sales_rank:float`` that the source provides.
One row per item of the ``.inter`` file (in order of first appearance there; items without
text get empty cells; item-file rows for items without interactions are dropped).  Text is
cleaned: HTML entities unescaped until stable (handles ``&amp;#39;``), exact UTF-8-as-Latin-1
mojibake repaired (``Â®`` -> ``®``), tabs / newlines / other control characters turned into
spaces, whitespace collapsed; a cell that pandas would read as NaN (``null``, ``N/A``, ...)
is written empty.  Categories become a space-separated token sequence with ``_`` replacing
spaces inside a category (``Beauty Makeup Face Concealers_&_Neutralizers``).  Empty float
cells stay empty (RecBole fills them).

Quoting: RecBole reads atomic files with ``pandas.read_csv(path, delimiter='\\t',
engine='python', dtype=..., encoding=config['encoding'])``, which honours CSV quoting (a cell
that starts with ``"`` is a quoted field, ``""`` inside it is one quote).  Files are written
with ``csv.writer(delimiter='\\t', quoting=csv.QUOTE_MINIMAL, lineterminator='\\n')`` in
UTF-8: any cell containing a double quote is enclosed in quotes with inner quotes doubled, so
text, including titles that start with a quote, is kept losslessly and reads back exactly
through RecBole (and through ``csv.reader(delimiter='\\t')``).  The header line never needs
quoting (RecBole reads it with a plain ``readline``).

Files are written to temporary files in the target folder and moved into place with
``os.replace`` only after both are complete.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from typing import Dict, List, Optional

from .sources import FLOAT_FIELDS, PrepareError, Source, detect_layout, read_p5, read_raw

__all__ = ["prepare_dataset", "main", "PrepareError", "TIMESTAMP_SCHEME"]

DAY = 86400
TIMESTAMP_SCHEME = (
    "timestamp = day (unix seconds, floored to 86400) + 0-based position in the user's "
    "sequence (seconds); sorts exactly into the source order"
)
TIMESTAMP_SCHEME_NO_TIME = (
    "timestamp = 0-based position in the user's sequence (no time file); sorts exactly into "
    "the source order"
)

_ITEM_TYPES = {
    "title": "token",
    "brand": "token",
    "categories": "token_seq",
    "price": "float",
    "sales_rank": "float",
}


def _format_float(v: Optional[float]) -> str:
    if v is None:
        return ""
    if float(v).is_integer() and abs(v) < 1e15:
        return f"{v:.1f}"
    return repr(float(v))


def _timestamps(src: Source) -> List[List[int]]:
    out = []
    bad_users = []
    for k, seq in enumerate(src.sequences):
        n = len(seq)
        if n >= DAY:
            raise PrepareError(
                f"user {src.users[k]} has {n} interactions; the day + position timestamp scheme "
                f"needs fewer than {DAY}"
            )
        if src.times is None:
            out.append(list(range(n)))
            continue
        days = [t - t % DAY for t in src.times[k]]
        if any(days[i] > days[i + 1] for i in range(n - 1)):
            bad_users.append(src.users[k])
        out.append([d + i for i, d in enumerate(days)])
    if bad_users:
        raise PrepareError(
            f"the timestamps ({src.time_source}) decrease along the sequence order for "
            f"{len(bad_users)} users (first: {bad_users[0]}); the order of the sequences cannot be "
            "kept with real days. Check that the time file belongs to these sequences."
        )
    return out


def _category_tokens(cats: List[str]) -> str:
    return " ".join("_".join(c.split()) for c in cats)


def _open_tmp(folder: str, final_name: str):
    fd, path = tempfile.mkstemp(prefix=f".{final_name}.", suffix=".tmp", dir=folder)
    return os.fdopen(fd, "w", encoding="utf-8", newline=""), path


def _write_atomic_pair(folder: str, name: str, inter_rows, item_header, item_rows) -> Dict[str, str]:
    inter_final = os.path.join(folder, f"{name}.inter")
    item_final = os.path.join(folder, f"{name}.item")
    tmp_paths = []
    try:
        f, p = _open_tmp(folder, f"{name}.inter")
        tmp_paths.append(p)
        with f:
            f.write("user_id:token\titem_id:token\ttimestamp:float\n")
            w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
            w.writerows(inter_rows)
        f, p = _open_tmp(folder, f"{name}.item")
        tmp_paths.append(p)
        with f:
            f.write("\t".join(item_header) + "\n")
            w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
            w.writerows(item_rows)
        for p in tmp_paths:
            os.chmod(p, 0o644)
        os.replace(tmp_paths[0], inter_final)
        os.replace(tmp_paths[1], item_final)
        tmp_paths = []
    finally:
        for p in tmp_paths:
            try:
                os.remove(p)
            except OSError:
                pass
    return {"inter": inter_final, "item": item_final}


def prepare_dataset(
    name: str,
    source: str,
    out_dir: str,
    *,
    min_inter: int = 5,
    verbose: bool = False,
) -> dict:
    """Convert the dataset in ``source`` into ``<out_dir>/<name>/<name>.{inter,item}``.

    Returns a dict of statistics (users, items, interactions, seq_len_min/mean/max,
    items_empty_title, ...).  Raises :class:`PrepareError` for bad input.
    ``min_inter`` is the k of the k-core filter applied to raw McAuley reviews.
    """
    if not name or name in (".", "..") or os.sep in name or (os.altsep and os.altsep in name):
        raise PrepareError(f"invalid dataset name {name!r}: must be a plain folder name")
    source = os.fspath(source)
    out_dir = os.fspath(out_dir)
    layout = detect_layout(source)
    src = read_raw(source, min_inter=min_inter) if layout == "raw" else read_p5(source)

    timestamps = _timestamps(src)

    inter_rows = []
    item_order: Dict[str, None] = {}
    for user, seq, ts in zip(src.users, src.sequences, timestamps):
        for item, t in zip(seq, ts):
            inter_rows.append((user, item, str(t)))
            item_order.setdefault(item, None)

    fields = src.item_fields
    item_header = ["item_id:token"] + [f"{f}:{_ITEM_TYPES[f]}" for f in fields]
    item_rows = []
    missing = 0
    empty_title = 0
    empty_title_items = []
    for item in item_order:
        rec = src.items.get(item)
        if rec is None:
            missing += 1
            rec = {}
        row = [item]
        for f in fields:
            v = rec.get(f)
            if f == "categories":
                row.append(_category_tokens(v or []))
            elif f in FLOAT_FIELDS:
                row.append(_format_float(v))
            else:
                row.append(v or "")
        if not rec.get("title"):
            empty_title += 1
            empty_title_items.append(item)
        item_rows.append(row)
    dropped = sum(1 for k in src.items if k not in item_order)

    empty_title_set = set(empty_title_items)
    inter_empty_title = sum(1 for s in src.sequences for i in s if i in empty_title_set)

    folder = os.path.join(out_dir, name)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise PrepareError(f"cannot create output folder '{folder}': {e}") from None
    paths = _write_atomic_pair(folder, name, inter_rows, item_header, item_rows)

    lens = [len(s) for s in src.sequences]
    stats = {
        "name": name,
        "layout": src.layout,
        "source": source,
        "inter_file": paths["inter"],
        "item_file": paths["item"],
        "users": len(src.users),
        "items": len(item_order),
        "interactions": len(inter_rows),
        "seq_len_min": min(lens),
        "seq_len_mean": sum(lens) / len(lens),
        "seq_len_max": max(lens),
        "item_rows": len(item_rows),
        "item_fields": list(fields),
        "item_source": src.item_source,
        "items_empty_title": empty_title,
        "items_empty_title_ids": empty_title_items,
        "interactions_empty_title": inter_empty_title,
        "items_without_text_row": missing,
        "item_rows_dropped_no_interaction": dropped,
        "time_source": src.time_source,
        "timestamp_scheme": TIMESTAMP_SCHEME if src.times is not None else TIMESTAMP_SCHEME_NO_TIME,
        "notes": list(src.notes),
    }
    if verbose:
        print(format_stats(stats))
    return stats


def format_stats(s: dict) -> str:
    lines = [
        f"dataset       : {s['name']}  ({s['layout']} layout, from {s['source']})",
        f"written       : {s['inter_file']}",
        f"                {s['item_file']}",
        f"users         : {s['users']:,}",
        f"items         : {s['items']:,}",
        f"interactions  : {s['interactions']:,}",
        f"seq length    : min {s['seq_len_min']}, mean {s['seq_len_mean']:.3f}, max {s['seq_len_max']}",
        f"item rows     : {s['item_rows']:,}  fields: {', '.join(s['item_fields']) or '(none)'}"
        f"  (from {s['item_source']})",
        f"empty title   : {s['items_empty_title']:,} items"
        f" ({s['interactions_empty_title']:,} interactions)",
        f"no text row   : {s['items_without_text_row']:,} items;"
        f" item rows dropped (no interaction): {s['item_rows_dropped_no_interaction']:,}",
        f"time source   : {s['time_source'] or 'none'}",
        f"timestamps    : {s['timestamp_scheme']}",
    ]
    for n in s["notes"]:
        lines.append(f"note          : {n}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m unger_recbole.data.prepare",
        description="Write RecBole atomic files <out>/<name>/<name>.inter and .item from a P5-layout "
        "folder (user_sequence.txt + item file [+ TiICSRec *_item.txt/*_time.txt]) or raw "
        "McAuley 2014 files (reviews_<Cat>_5.json.gz + meta_<Cat>.json.gz).",
    )
    parser.add_argument("name", help="dataset name, e.g. amazon-beauty")
    parser.add_argument("--source", required=True, help="folder with the source files")
    parser.add_argument("--out", default="dataset", help="output root (default: dataset/)")
    parser.add_argument(
        "--min-inter", type=int, default=5,
        help="k of the k-core filter for raw McAuley reviews (default 5)",
    )
    args = parser.parse_args(argv)
    try:
        stats = prepare_dataset(args.name, args.source, args.out, min_inter=args.min_inter)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_stats(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
