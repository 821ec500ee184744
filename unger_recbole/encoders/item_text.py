"""Item side information S -> one text per item, for the semantic encoder (paper §3.3).

Reading. :func:`read_item_table` reads a RecBole atomic ``.item`` file (tab separated, header
``item_id:token<TAB>title:token<TAB>categories:token_seq ...``) with Python's ``csv`` module, so a
field in double quotes may contain tabs, newlines and doubled quotes (``""``), as pandas/RecBole read
it. The ``:type`` suffixes are stripped from the header; the types are kept on the returned table as
``table.field_types`` (``{"title": "token", "categories": "token_seq", ...}``).

Rendering a field value. Per field one of four modes (``field_render={"categories": "list"}``):

* ``raw``: the value as stored (stripped).
* ``words``: elements separated by spaces form one phrase: split on whitespace, ``_`` -> space,
  join with ``" "``. ``movie_title`` of ml-100k (``Toy Story (1995)``) stays ``Toy Story (1995)``.
* ``list``: elements are separate labels: split on whitespace, ``_`` -> space, join with ``", "``.
  ``Beauty Hair_Care Styling_Products`` -> ``Beauty, Hair Care, Styling Products``. A value written as
  a quoted Python-style list (``'Beauty', 'Hair Care'`` -- RecBole's own Amazon ``.item`` files) is
  parsed as such.
* ``auto`` (default): ``token_seq`` fields whose name says they hold labels (categories, category,
  genre(s), tag(s), label(s), keyword(s), class(es), topic(s), ...) -> ``list``; other ``token_seq``
  fields -> ``words``; ``token``/``float``/other fields -> ``raw``. If the type is unknown (a plain
  dict was passed), the name rule alone decides between ``list`` and ``raw``.

Why by name and not by sniffing for ``_``: a category list without multi-word labels
(``Beauty Makeup Face``) looks exactly like a title; the field's meaning, not its content, decides.

Text of an item. Default (``template=None``): the non-empty fields in the given order as
``"title: X; brand: Y; categories: A, B"`` (label = field name with ``_`` -> space). With a
``template`` such as ``"{title}. Brand: {brand}. Categories: {categories}"`` the placeholders are
filled with the rendered values (missing -> ""). An item whose first field (the title) is empty
falls back to the default join of its other non-empty fields, even with a template. Items with no
text at all get ``""``; :func:`build_item_texts` counts both cases in its stats.

RecBole's padding token ``[PAD]`` (index 0 of ``dataset.field2id_token['item_id']``) is accepted
and gets ``""`` without being counted as an empty item, so the id-token list can be passed as is.
"""

from __future__ import annotations

import ast
import csv
import os
import re
import string
import sys
from typing import Iterable, Mapping

__all__ = ["ItemTable", "read_item_table", "render_field", "build_item_texts", "LIST_FIELD_NAMES"]

#: token_seq fields with one of these names (or ending in ``_<name>``) are rendered as lists
LIST_FIELD_NAMES = frozenset(
    {
        "categories", "category", "cate", "cates", "cat", "cats", "genre", "genres", "tag", "tags",
        "label", "labels", "keyword", "keywords", "class", "classes", "topic", "topics",
        "attribute", "attributes", "style", "styles", "feature", "features",
    }
)
RENDER_MODES = ("auto", "raw", "words", "list")
PAD_TOKEN = "[PAD]"


class ItemTable(dict):
    """``{item_token: {field: value}}`` plus ``fields`` (header order) and ``field_types``."""

    def __init__(self, *args, fields: list[str] | None = None, field_types: dict[str, str] | None = None,
                 id_field: str | None = None, **kw):
        super().__init__(*args, **kw)
        self.fields: list[str] = list(fields or [])
        self.field_types: dict[str, str] = dict(field_types or {})
        self.id_field = id_field


def read_item_table(item_file: str | os.PathLike, id_field: str = "item_id", encoding: str = "utf-8") -> ItemTable:
    """Read a RecBole atomic ``.item`` file into ``{item_token: {field: value_str}}``.

    The id column is ``id_field`` if present, else the first column. Missing trailing cells read as
    ``""``; on duplicate ids the first row wins (as RecBole would keep one row per id).
    """
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open(item_file, newline="", encoding=encoding) as f:
        reader = csv.reader(f, delimiter="\t", quotechar='"', doublequote=True)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{item_file}: empty .item file (no header)") from None
        fields, types = [], {}
        for h in header:
            name, _, typ = h.strip().partition(":")
            fields.append(name)
            types[name] = typ or "token"
        if len(set(fields)) != len(fields):
            raise ValueError(f"{item_file}: duplicate field names in header {fields}")
        id_col = fields.index(id_field) if id_field in fields else 0
        table = ItemTable(fields=fields, field_types=types, id_field=fields[id_col])
        n = len(fields)
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) < n:
                row = row + [""] * (n - len(row))
            token = row[id_col].strip()
            if token in table:
                continue
            table[token] = {f: row[i] for i, f in enumerate(fields)}
    return table


def _is_list_name(field: str) -> bool:
    f = field.lower()
    return f in LIST_FIELD_NAMES or f.rsplit("_", 1)[-1] in LIST_FIELD_NAMES


def _resolve_mode(field: str, ftype: str | None, mode: str) -> str:
    if mode not in RENDER_MODES:
        raise ValueError(f"render mode for field {field!r} must be one of {list(RENDER_MODES)}, got {mode!r}")
    if mode != "auto":
        return mode
    if ftype is None:
        return "list" if _is_list_name(field) else "raw"
    if ftype.endswith("_seq"):
        return "list" if _is_list_name(field) else "words"
    return "raw"


_QUOTED_LIST = re.compile(r"""^\s*\[?\s*(['"]).*(['"])\s*\]?\s*$""", re.S)


def _parse_quoted_list(value: str) -> list[str] | None:
    """``'Beauty', "Women's"`` or ``['a', 'b']`` -> list of str, else None."""
    if not _QUOTED_LIST.match(value):
        return None
    s = value.strip()
    if not s.startswith("["):
        s = f"[{s}]"
    try:
        parsed = ast.literal_eval(s)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if isinstance(parsed, (list, tuple)) and all(isinstance(x, str) for x in parsed):
        return [x.strip() for x in parsed]
    return None


def render_field(value: str | None, mode: str) -> str:
    """Render one stored value with a resolved mode (``raw``/``words``/``list``)."""
    if value is None:
        return ""
    value = str(value).strip()
    if not value:
        return ""
    if mode == "raw":
        return value
    if mode == "list":
        items = _parse_quoted_list(value)
        if items is None:
            items = [t.replace("_", " ").strip() for t in value.split()]
        return ", ".join(x for x in items if x)
    if mode == "words":
        return " ".join(t.replace("_", " ").strip() for t in value.split() if t.replace("_", " ").strip())
    raise ValueError(f"unknown render mode {mode!r}")


class _Blank(dict):
    def __missing__(self, key):
        return ""


def build_item_texts(
    item_table: Mapping[str, Mapping[str, str]],
    item_tokens: Iterable[str],
    fields: list[str],
    template: str | None = None,
    field_render: Mapping[str, str] | None = None,
    padding_tokens: Iterable[str] = (PAD_TOKEN,),
) -> tuple[list[str], dict]:
    """One text per token of ``item_tokens`` (same order) from ``fields`` of ``item_table``.

    Returns ``(texts, stats)`` with stats ``n_items`` (excluding padding tokens), ``n_padding``,
    ``title_field`` (= ``fields[0]``), ``n_empty_title``, ``n_empty_text``, ``empty_title_examples``
    and ``empty_text_examples`` (up to 5 tokens each), ``render`` (the mode used per field).

    Raises ``ValueError`` if a field is not in the table (listing the available ones), if
    ``fields`` is empty, or if item tokens are missing from the table (naming a few).
    """
    fields = list(fields)
    if not fields:
        raise ValueError("fields must name at least one item field (e.g. ['title'])")
    field_render = dict(field_render or {})
    types = getattr(item_table, "field_types", None) or {}
    available = list(getattr(item_table, "fields", None) or [])
    if not available:
        first = next(iter(item_table.values()), None)
        available = list(first) if first is not None else []
    missing_fields = [f for f in fields if f not in available]
    if missing_fields:
        raise ValueError(f"item field(s) {missing_fields} not in the item table; available fields: {available}")
    unknown_render = sorted(set(field_render) - set(fields))
    if unknown_render:
        raise ValueError(f"field_render names field(s) {unknown_render} that are not in fields {fields}")
    if template is not None:
        names = {fn.split(".")[0].split("[")[0] for _, fn, _, _ in string.Formatter().parse(template) if fn}
        bad = sorted(names - set(fields))
        if bad:
            raise ValueError(f"template placeholder(s) {bad} are not in fields {fields}")
    modes = {f: _resolve_mode(f, types.get(f) if types else None, field_render.get(f, "auto")) for f in fields}

    pads = set(padding_tokens)
    tokens = [str(t) for t in item_tokens]
    absent = [t for t in tokens if t not in item_table and t not in pads]
    if absent:
        raise ValueError(
            f"{len(absent)} item token(s) not in the item table, e.g. {absent[:5]} "
            f"(the table has {len(item_table)} items)"
        )

    title = fields[0]
    texts: list[str] = []
    n_pad = n_empty_title = n_empty_text = 0
    ex_title: list[str] = []
    ex_text: list[str] = []
    for tok in tokens:
        if tok in pads and tok not in item_table:
            texts.append("")
            n_pad += 1
            continue
        row = item_table[tok]
        vals = {f: render_field(row.get(f), modes[f]) for f in fields}
        if not vals[title]:
            n_empty_title += 1
            if len(ex_title) < 5:
                ex_title.append(tok)
        if template is not None and vals[title]:
            text = template.format_map(_Blank(vals)).strip()
        else:
            text = "; ".join(f"{f.replace('_', ' ')}: {v}" for f, v in vals.items() if v)
        if not text:
            n_empty_text += 1
            if len(ex_text) < 5:
                ex_text.append(tok)
        texts.append(text)
    stats = {
        "n_items": len(tokens) - n_pad,
        "n_padding": n_pad,
        "title_field": title,
        "n_empty_title": n_empty_title,
        "n_empty_text": n_empty_text,
        "empty_title_examples": ex_title,
        "empty_text_examples": ex_text,
        "render": modes,
    }
    return texts, stats
