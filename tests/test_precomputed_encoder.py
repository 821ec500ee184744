"""encoder: precomputed: MiniLM embeddings exported once give the same E_S as MiniLM itself."""

import numpy as np
import pytest

import run_unger
from tests.test_unger_pipeline import CLI_SMALL
from unger_recbole.encoders import build_encoder
from unger_recbole.encoders.precomputed import main as export_main


def test_exported_embeddings_reproduce_the_encoders_semantic_table(tiny_data, tmp_path):
    exported = tmp_path / "tiny-minilm.npz"
    export_main(["--dataset", "tiny", "--data_path", str(tiny_data), "--out", str(exported), "--encoder", "minilm"])
    with np.load(exported) as npz:
        assert npz["embeddings"].shape == (20, 384) and len(set(npz["texts"].tolist())) == 20

    common = ["--model=UNGER", "--dataset=tiny", f"--data_path={tiny_data}", *CLI_SMALL, "--stop_after=codes"]
    direct = run_unger.main(common + ["--encoder=minilm"])
    precomputed = run_unger.main(common + ["--encoder=precomputed", f"--encoder_file={exported}"])
    semantic = [np.load(f"{r['run_dir']}/semantic.npz")["embeddings"] for r in (direct, precomputed)]
    assert np.array_equal(semantic[0], semantic[1])  # same rows, in RecBole's item order
    codes = [np.load(f"{r['run_dir']}/code_table.npz")["codes"] for r in (direct, precomputed)]
    assert np.array_equal(codes[0], codes[1])


def test_precomputed_encoder_refuses_texts_it_does_not_have_and_missing_files(tmp_path):
    path = tmp_path / "two.npz"
    np.savez(path, texts=np.array(["a", "b"]), embeddings=np.eye(2, dtype=np.float32))
    encoder = build_encoder("precomputed", file=str(path))
    assert np.array_equal(encoder.encode(["b", "a"]), [[0, 1], [1, 0]])  # looked up by text
    with pytest.raises(ValueError, match="1 of 2 item texts are not in"):
        encoder.encode(["a", "c"])
    with pytest.raises(FileNotFoundError, match="export it with"):
        build_encoder("precomputed", file=str(tmp_path / "absent.npz"))
    with pytest.raises(ValueError, match="needs encoder_file"):
        build_encoder("precomputed")
