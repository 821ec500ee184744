"""Recommend from a trained UNGER run without retraining and without the RecBole dataset files.

    python -m unger_recbole.recommend --run saved/<run_id> --history i3 i7 i12 [--k 10] [--beam 20]
    python -m unger_recbole.recommend --run saved/<run_id> --input histories.jsonl --output recs.jsonl

Python::

    from unger_recbole.recommend import load_recommender
    recommender = load_recommender("saved/<run_id>", device="cpu")
    recommender.recommend([["i3", "i7", "i12"]], k=10)  # -> [{"items", "scores", "titles", ...}]

What is read from the run folder (written by ``run_unger.py --model=UNGER``):

* ``run.json`` -- written last by a run; its absence means the run is incomplete. Gives the model
  name, the run id and the dataset's ``.item`` file (path + content hash) for titles.
* ``model.pth`` -- RecBole checkpoint: the pickled ``Config`` the model was trained with and the
  ``state_dict``.
* ``code_table.npz`` -- item codes (row 0 = padding), integrated embeddings, codebook size and the
  original item tokens of internal ids 1..n-1.
* ``item_codes.csv`` -- the same codes with original item ids; used to check the table.

The model is rebuilt as ``UNGER(config, RunDataset(...))``: RecBole's
``SequentialRecommender.__init__`` reads only ``dataset.num(ITEM_ID_FIELD)`` from a dataset (field
names, ``MAX_ITEM_LIST_LENGTH`` and ``device`` come from the config), and ``UNGER.__init__`` reads
nothing else from it, so :class:`RunDataset` answers that one question from the code table.

Histories are turned into RecBole's input exactly as evaluation sees it: tokens -> internal ids
(token ``item_tokens[i]`` is internal id ``i + 1``), the last ``MAX_ITEM_LIST_LENGTH`` items,
left-aligned with zero padding in ``item_id_list [B, MAX_ITEM_LIST_LENGTH]`` and ``item_length [B]``.
Items come from :meth:`UNGER.generate`, the same trie-constrained beam search evaluation uses, so a
test user's evaluation history gives the ranking and scores of ``predictions.jsonl``. As in
evaluation, items already in the history are not removed.

A code table that does not belong to the checkpoint is refused (never guessed around), see
:func:`check_code_table`.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unger_recbole.artifacts import content_key
from unger_recbole.compat import load_checkpoint
from unger_recbole.pipeline import code_table_digest
from unger_recbole.quick_start import RUN_MANIFEST

import torch


CHECKPOINT = "model.pth"
CODE_TABLE = "code_table.npz"
CODE_CSV = "item_codes.csv"
REQUIRED_FILES = (RUN_MANIFEST, CHECKPOINT, CODE_TABLE, CODE_CSV)
MODEL_NAME = "UNGER"
DIGEST_KEY = "code_table_digest"  # config key a run may store (see code_table_digest); checked when present


class RunFolderError(ValueError):
    """The run folder cannot be used: incomplete run, another model, a missing or mismatching file."""


class HistoryError(ValueError):
    """A history cannot be recommended for (nothing known left in it)."""


class RunDataset:
    """Stand-in for the RecBole dataset ``UNGER(config, dataset)`` takes.

    RecBole's ``SequentialRecommender.__init__`` asks a dataset for one thing only,
    ``dataset.num(config["ITEM_ID_FIELD"])`` (the number of item ids, padding id 0 included);
    ``UNGER.__init__`` asks nothing else. Here that number is the row count of the run's
    ``code_table.npz``. Any other question raises, so a model that needs more fails loudly.
    """

    def __init__(self, item_field, n_items):
        self.iid_field = item_field
        self.item_num = int(n_items)

    def num(self, field):
        if field != self.iid_field:
            raise KeyError(f"RunDataset only knows the item field {self.iid_field!r}, not {field!r}")
        return self.item_num


# ------------------------------------------------------------------------------------ loading
def read_manifest(run_dir):
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"run folder {run_dir} does not exist")
    if not (run_dir / RUN_MANIFEST).is_file():
        runs = sorted((p.parent for p in run_dir.glob(f"*/{RUN_MANIFEST}")), key=lambda p: p.stat().st_mtime)
        hint = (f"; complete runs inside it: {', '.join(str(p) for p in runs[-5:])}" if runs else "")
        raise RunFolderError(
            f"{run_dir} is not a complete run: {RUN_MANIFEST} is missing (run_unger.py writes it last, "
            f"after training and testing; the run was interrupted, is still running, or this is not a "
            f"run folder){hint}")
    try:
        manifest = json.loads((run_dir / RUN_MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise RunFolderError(f"cannot read {run_dir / RUN_MANIFEST}: {error}") from None
    model = manifest.get("model")
    if model != MODEL_NAME:
        raise RunFolderError(f"{run_dir} is a run of model {model!r}, not {MODEL_NAME}: only UNGER runs can "
                             f"be recommended from")
    missing = [name for name in REQUIRED_FILES[1:] if not (run_dir / name).is_file()]
    if missing:
        raise RunFolderError(f"{run_dir} lacks {', '.join(missing)} (needed to rebuild the model)")
    return manifest


def read_code_csv(path):
    tokens, codes = [], []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            tokens.append(row["item_id"])
            codes.append([int(c) for c in row["code"].split()])
    return tokens, codes


def check_code_table(run_dir, manifest, config, state_dict, table):
    """Refuse a code table that does not belong to the checkpoint. Checks, in order:

    1. the table itself: codes ``[n_items, L]`` with a padding row of -1s, one item token per
       real item, integrated embeddings for every row;
    2. ``code_table_digest`` in the checkpoint's config, when the run stored one (exact);
    3. the checkpoint came from this run: its config's ``code_table_file`` lies in a folder named
       after ``run.json``'s ``run_id``;
    4. if that ``code_table_file`` still exists elsewhere (the run folder was copied), it has the
       same content;
    5. ``item_codes.csv`` (written with the table) lists the same tokens and codes;
    6. shapes: the checkpoint's ``token_embedding`` has ``L*(K+1)+3`` rows for the table's L and
       K, and ``distill_projection`` maps to the integrated embeddings' width.
    """
    codes, integrated = table["codes"], table["integrated"]
    K = int(table["codebook_size"])
    item_tokens = [str(t) for t in table["item_tokens"]]
    where = run_dir / CODE_TABLE
    if codes.ndim != 2 or codes.shape[0] < 2 or not (codes[0] == -1).all():
        raise RunFolderError(f"{where}: codes must be [n_items, L] with a padding row of -1s, "
                             f"got shape {codes.shape}")
    if len(item_tokens) != codes.shape[0] - 1 or integrated.shape[0] != codes.shape[0]:
        raise RunFolderError(f"{where}: {codes.shape[0]} code rows, {len(item_tokens)} item tokens and "
                             f"{integrated.shape[0]} embedding rows do not fit together")

    stored = config.final_config_dict.get(DIGEST_KEY)
    if stored is not None and stored != code_table_digest(codes, K, item_tokens):
        raise RunFolderError(f"{where} is not the code table {run_dir / CHECKPOINT} was trained with "
                             f"(its {DIGEST_KEY} differs)")

    trained_table = Path(str(config["code_table_file"]))
    run_id = manifest.get("run_id")
    if run_id and trained_table.parent.name != run_id:
        raise RunFolderError(f"{run_dir / CHECKPOINT} was trained with {trained_table}, which is not from run "
                             f"{run_id} ({RUN_MANIFEST}): the checkpoint belongs to another run")
    for candidate in {trained_table, run_dir.parent.parent / trained_table}:
        if candidate.is_file() and candidate.resolve() != where.resolve():
            if content_key(candidate) != content_key(where):
                raise RunFolderError(f"{where} differs from {candidate}, the code table the checkpoint was "
                                     f"trained with")

    csv_tokens, csv_codes = read_code_csv(run_dir / CODE_CSV)
    table_codes = [[int(c) for c in row if c >= 0] for row in codes[1:]]
    if csv_tokens != item_tokens or csv_codes != table_codes:
        raise RunFolderError(f"{where} and {run_dir / CODE_CSV} list different items or codes: the code "
                             f"table was replaced after training")

    L = codes.shape[1]
    expected_tokens = L * (K + 1) + 3
    found = tuple(state_dict["token_embedding.weight"].shape)
    if found[0] != expected_tokens:
        raise RunFolderError(f"{run_dir / CHECKPOINT} has {found[0]} code tokens but {where} (L={L}, K={K}) "
                             f"implies L*(K+1)+3 = {expected_tokens}: the code table does not match")
    projection = tuple(state_dict["distill_projection.weight"].shape)
    if projection[0] != integrated.shape[1]:
        raise RunFolderError(f"{run_dir / CHECKPOINT} distils into {projection[0]}-d embeddings but {where} "
                             f"holds {integrated.shape[1]}-d ones: the code table does not match")


def resolve_device(device):
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunFolderError("--device cuda was asked for but no CUDA device is visible (use cpu or auto)")
    return device


def read_titles(manifest, title_field):
    """``({token: title}, None)`` or ``(None, reason)`` from the run's ``.item`` file, checked by hash."""
    from unger_recbole.encoders.item_text import read_item_table
    entry = (manifest.get("data_files") or {}).get("item")
    if not entry:
        return None, "the run recorded no .item file"
    path = Path(entry["path"])
    if not path.is_file():
        return None, f"{path} (the run's .item file) is gone"
    if content_key(path) != entry.get("sha256"):
        return None, f"{path} changed since the run (its sha256 differs from run.json)"
    table = read_item_table(path)
    field_name = title_field if title_field in table.fields else ("title" if "title" in table.fields else None)
    if field_name is None:
        return None, f"{path} has no {title_field!r} field"
    return {token: row[field_name] for token, row in table.items()}, None


def load_recommender(run_dir, device="auto"):
    """Rebuild the trained UNGER of ``run_dir`` (no dataset files, no training) -> :class:`Recommender`.

    Raises :class:`RunFolderError` for an incomplete run, another model, missing files or a code
    table that does not match the checkpoint.
    """
    from unger_recbole.model.unger import UNGER

    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    device = resolve_device(device)
    try:
        checkpoint = load_checkpoint(run_dir / CHECKPOINT, "cpu")
        config, state_dict = checkpoint["config"], checkpoint["state_dict"]
    except Exception as error:  # a truncated or foreign file
        raise RunFolderError(f"cannot read the checkpoint {run_dir / CHECKPOINT}: {error}") from None
    if config["model"] != MODEL_NAME:
        raise RunFolderError(f"{run_dir / CHECKPOINT} holds a {config['model']!r} model, not {MODEL_NAME}")
    try:
        with np.load(run_dir / CODE_TABLE) as npz:
            table = {name: npz[name] for name in npz.files}
    except Exception as error:  # not an npz, truncated
        raise RunFolderError(f"cannot read the code table {run_dir / CODE_TABLE}: {error}") from None
    missing = {"codes", "integrated", "codebook_size", "item_tokens"} - set(table)
    if missing:
        raise RunFolderError(f"{run_dir / CODE_TABLE} lacks {', '.join(sorted(missing))}")
    check_code_table(run_dir, manifest, config, state_dict, table)

    config["code_table_file"] = str(run_dir / CODE_TABLE)
    config["device"] = device
    model = UNGER(config, RunDataset(config["ITEM_ID_FIELD"], table["codes"].shape[0]))
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:  # any shape the checks above do not cover
        raise RunFolderError(f"{run_dir / CHECKPOINT} does not fit the model rebuilt from its config and "
                             f"{run_dir / CODE_TABLE}: {error}") from None
    model.load_other_parameter(checkpoint.get("other_parameter"))
    model.to(device).eval()

    titles, titles_note = read_titles(manifest, list(config["item_text_fields"] or ["title"])[0])
    return Recommender(model=model, run_dir=run_dir, run_id=manifest.get("run_id") or run_dir.name,
                       dataset=manifest.get("dataset"), item_tokens=[str(t) for t in table["item_tokens"]],
                       titles=titles, titles_note=titles_note, device=device, config=config)


# ------------------------------------------------------------------------------- recommending
@dataclass
class Recommender:
    """A trained UNGER ready to recommend; build it with :func:`load_recommender`."""

    model: torch.nn.Module
    run_dir: Path
    run_id: str
    dataset: str
    item_tokens: list  # original token of internal id i + 1
    titles: dict | None  # token -> title, None when unavailable (reason in titles_note)
    titles_note: str | None
    device: torch.device
    config: object  # the RecBole Config stored in the checkpoint (code table and device set to this run)
    token_to_id: dict = field(init=False)

    def __post_init__(self):
        self.token_to_id = {token: index + 1 for index, token in enumerate(self.item_tokens)}

    @property
    def max_history(self):
        return self.model.max_seq_length

    @property
    def default_beam(self):
        return self.model.beam_size

    def encode_history(self, history, name="history"):
        """Internal ids of the known tokens (the last ``MAX_ITEM_LIST_LENGTH``) and the unknown tokens."""
        tokens = [str(token) for token in history]
        unknown = [token for token in tokens if token not in self.token_to_id]
        ids = [self.token_to_id[token] for token in tokens if token in self.token_to_id]
        if unknown:
            warnings.warn(f"{name}: skipping {len(unknown)} item(s) unknown to run {self.run_id}: "
                          f"{' '.join(unknown)}", stacklevel=3)
        if not ids:
            raise HistoryError(f"{name} has no item known to run {self.run_id}"
                               + (f" (all unknown: {' '.join(unknown)})" if unknown else " (it is empty)"))
        return ids[-self.max_history:], unknown

    def batch_tensors(self, id_lists):
        """RecBole's ``item_id_list [B, MAX_ITEM_LIST_LENGTH]`` (left-aligned, 0-padded) and ``item_length [B]``."""
        item_seq = torch.zeros(len(id_lists), self.max_history, dtype=torch.long)
        for row, ids in enumerate(id_lists):
            item_seq[row, :len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        lengths = torch.as_tensor([len(ids) for ids in id_lists], dtype=torch.long)
        return item_seq.to(self.device), lengths.to(self.device)

    def recommend(self, histories, k=10, beam=None, names=None, batch_size=256):
        """Top-``k`` items for each history (a list of item tokens, oldest first).

        Returns one dict per history: ``items`` (tokens, best first), ``scores`` (the beam's
        log-probabilities, rounded to 6 decimals as in predictions.jsonl), ``titles`` (str or None
        per item), ``history`` (the tokens used) and ``unknown`` (tokens skipped, with a warning).
        Fewer than ``k`` items come back only if the beam finds fewer valid items.
        """
        beam = int(beam or self.default_beam)
        k = int(k)
        if k < 1 or beam < 1:
            raise ValueError(f"k and beam must be >= 1, got k={k}, beam={beam}")
        if k > beam:
            raise ValueError(f"k ({k}) must be <= beam ({beam}): the beam search returns at most beam items")
        names = names or [f"history {index + 1}" for index in range(len(histories))]
        encoded = [self.encode_history(history, name) for history, name in zip(histories, names)]
        results = []
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start:start + batch_size]
            item_seq, lengths = self.batch_tensors([ids for ids, _ in chunk])
            items, scores = self.model.generate(item_seq, lengths, beam_size=beam, top_k=k)
            for (ids, unknown), row_items, row_scores in zip(chunk, items.cpu().tolist(), scores.cpu().tolist()):
                kept = [(item, score) for item, score in zip(row_items, row_scores) if item > 0]
                tokens = [self.item_tokens[item - 1] for item, _ in kept]
                results.append({
                    "items": tokens,
                    "scores": [round(float(score), 6) for _, score in kept],
                    "titles": [self.titles.get(token) if self.titles else None for token in tokens],
                    "history": [self.item_tokens[item - 1] for item in ids],
                    "unknown": unknown,
                })
        return results


# ------------------------------------------------------------------------------------------ CLI
def read_jsonl_histories(path):
    """``(users, histories, line_numbers)`` from a JSONL file of ``{"user": ..., "history": [...]}``."""
    users, histories, numbers = [], [], []
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise HistoryError(f"{path} line {number}: not JSON ({error})") from None
            if not isinstance(record, dict) or not isinstance(record.get("history"), list):
                raise HistoryError(f"{path} line {number}: expected {{\"user\": ..., \"history\": [tokens...]}}")
            users.append(record.get("user"))
            histories.append(record["history"])
            numbers.append(number)
    if not histories:
        raise HistoryError(f"{path} holds no history")
    return users, histories, numbers


def print_table(recommender, result, out):
    shown = ' '.join(result["history"])
    print(f"run {recommender.run_id} ({MODEL_NAME} on {recommender.dataset}); history of "
          f"{len(result['history'])} item(s): {shown}", file=out)
    width = max([4] + [len(token) for token in result["items"]])
    print(f"{'rank':>4}  {'item':<{width}}  {'score':>10}  title", file=out)
    for rank, (token, score, title) in enumerate(zip(result["items"], result["scores"], result["titles"]), 1):
        print(f"{rank:>4}  {token:<{width}}  {score:>10.6f}  {title if title is not None else ''}".rstrip(), file=out)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m unger_recbole.recommend", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run folder of a finished UNGER run (saved/<run_id>)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--history", nargs="+", metavar="ITEM", help="item tokens, oldest first")
    source.add_argument("--input", help='JSONL file, one {"user": id (optional), "history": [tokens...]} per line')
    parser.add_argument("--output", help="JSONL file for --input's recommendations (default: stdout)")
    parser.add_argument("--k", type=int, default=10, help="items to recommend (default 10)")
    parser.add_argument("--beam", type=int, default=None, help="beam width (default: the run's beam_size)")
    parser.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"), help="default auto")
    args = parser.parse_args(argv)
    if args.output and not args.input:
        parser.error("--output goes with --input")

    def show_warning(message, category, filename, lineno, file=None, line=None):
        print(f"recommend: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show_warning
        try:
            recommender = load_recommender(args.run, args.device)
            if recommender.titles_note:
                print(f"recommend: note: no titles shown: {recommender.titles_note}", file=sys.stderr)
            if args.history:
                result = recommender.recommend([args.history], k=args.k, beam=args.beam, names=["--history"])[0]
                print_table(recommender, result, sys.stdout)
                return 0
            users, histories, numbers = read_jsonl_histories(args.input)
            names = [f"{args.input} line {n}" + (f" (user {u})" if u is not None else "")
                     for n, u in zip(numbers, users)]
            results = recommender.recommend(histories, k=args.k, beam=args.beam, names=names)
        except (ValueError, OSError) as error:  # RunFolderError and HistoryError are ValueErrors
            print(f"recommend: error: {error}", file=sys.stderr)
            return 2
    lines = [json.dumps({"user": user, "items": r["items"], "titles": r["titles"], "scores": r["scores"]})
             for user, r in zip(users, results)]
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text("".join(line + "\n" for line in lines))
        print(f"recommend: {len(lines)} recommendation list(s) written to {args.output}", file=sys.stderr)
    else:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
