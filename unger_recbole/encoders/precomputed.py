"""``encoder: precomputed``: item-text embeddings computed elsewhere, read from an npz file.

Paper-size encoders (Llama2-7b) need a GPU with their weights; stage I and stage II do not. Encode
once where the model lives, export, and train anywhere:

    # where the encoder is installed (uses and fills the artifact cache)
    python -m unger_recbole.encoders.precomputed --dataset amazon-beauty --out dataset/amazon-beauty/minilm.npz
    # anywhere else
    python run_unger.py --model=UNGER --dataset=amazon-beauty --encoder=precomputed \
        --encoder_file=dataset/amazon-beauty/minilm.npz

The file holds ``texts`` (the item texts, as built from ``item_text_fields``), ``embeddings``
(float32 ``[n, dim]``, row i for text i) and ``source`` (the exporting encoder's cache key, JSON).
Lookup is by text, so item order does not matter; a text missing from the file is an error (the
item file or ``item_text_fields`` changed since the export). The cache key is the file's sha256.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from unger_recbole.artifacts import content_key

from .base import TextEncoder, register_encoder


@register_encoder("precomputed")
class PrecomputedEncoder(TextEncoder):
    """Parameters (``DEFAULTS``): ``file``, the exported npz (config key ``encoder_file``)."""

    DEFAULTS = {"file": None}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if not self.params["file"]:
            raise ValueError("encoder 'precomputed' needs encoder_file=<npz written by "
                             "python -m unger_recbole.encoders.precomputed>")
        self.file = Path(self.params["file"])
        if not self.file.is_file():
            raise FileNotFoundError(f"encoder_file {self.file} does not exist; export it with "
                                    f"python -m unger_recbole.encoders.precomputed --dataset <name> --out {self.file}")
        self.digest = content_key(self.file)

    def encode(self, texts: list[str]) -> np.ndarray:
        with np.load(self.file) as npz:
            stored_texts, embeddings = [str(t) for t in npz["texts"]], npz["embeddings"].astype(np.float32)
        row_of = {text: row for row, text in enumerate(stored_texts)}
        missing = [text for text in texts if text not in row_of]
        if missing:
            raise ValueError(f"{len(missing)} of {len(texts)} item texts are not in {self.file} (e.g. {missing[0]!r}): "
                             f"it was exported from other item texts; export it again from this dataset.")
        return embeddings[[row_of[text] for text in texts]]

    def cache_key(self) -> dict:
        return {"encoder": "precomputed", "sha256": self.digest}


def export(config, out):
    """Encode the dataset's item texts with the configured encoder (through the artifact cache)
    and write them as an ``encoder: precomputed`` file. Returns the number of items written."""
    from recbole.data import create_dataset

    from unger_recbole.artifacts import ArtifactCache, cached_item_embeddings
    from unger_recbole.pipeline import configured_encoder, item_texts

    dataset = create_dataset(config)
    item_tokens = [str(t) for t in dataset.field2id_token[dataset.iid_field][1:]]
    texts, _ = item_texts(config, item_tokens)
    encoder = configured_encoder(config)
    embeddings = cached_item_embeddings(ArtifactCache(config["artifact_dir"]), encoder, texts,
                                        meta={"dataset": config["dataset"]})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.npz")
    np.savez(tmp, texts=np.array(texts), embeddings=embeddings, source=np.array(json.dumps(encoder.cache_key())))
    tmp.replace(out)
    return len(texts)


def main(argv=None):
    from unger_recbole.quick_start import build_config, model_overrides, property_files, resolve_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--out", required=True, help="npz file to write")
    parser.add_argument("--data_path", default=None, help="folder holding <dataset>/ (default: overall.yaml's)")
    parser.add_argument("--encoder", default=None, help="encoder to export (default: the UNGER config's)")
    args = parser.parse_args(argv)
    overrides = {key: value for key, value in (("data_path", args.data_path), ("encoder", args.encoder)) if value}
    model_class = resolve_model("UNGER")
    config = build_config(model_class, args.dataset, property_files("UNGER", args.dataset, model_class),
                          {**model_overrides("UNGER", args.dataset, []), **overrides})
    if config["encoder"] == "precomputed":
        raise SystemExit("choose the encoder to export with --encoder (the config names 'precomputed')")
    count = export(config, args.out)
    print(f"wrote {count} item embeddings to {args.out}")


if __name__ == "__main__":
    main()
