"""UNGER stage I and stage II models on the tiny dataset with hand-made codes (no quantizer)."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from recbole.data import create_dataset, data_preparation
from recbole.data.interaction import Interaction, cat_interactions
from unger_recbole.compat import build_config
from unger_recbole.model import UNGER, UNGERStage1
from unger_recbole.model.layers import ModalityAdaptationLayer
from unger_recbole.model.stage1 import din_target_attention_scores, info_nce
from unger_recbole.quick_start import property_files
from tests.conftest import TINY_OVERRIDES

SMALL_UNGER = {"hidden_size": 32, "inner_size": 64, "n_heads": 2, "n_decoder_layers": 2, "dropout_prob": 0.0,
               "stage1_embedding_size": 16, "stage1_dropout": 0.0, "distill_negatives": 5, "beam_size": 20}


def hand_made_codes(n_real_items, codebook_size=4):
    """Prefix-free codes of lengths 2 and 3 (items 0..2 get short codes), unique per item."""
    codes = []
    for item in range(n_real_items):
        first, rest = divmod(item, codebook_size * codebook_size)
        if item < 3:
            codes.append([codebook_size - 1, item, -1])
        else:
            codes.append([first, rest // codebook_size, rest % codebook_size])
    return np.array(codes)


def tiny_unger(data_path, tmp_path, **overrides):
    config = build_config(UNGER, "tiny", property_files("UNGER", "tiny", UNGER),
                          {"data_path": str(data_path), **TINY_OVERRIDES, **SMALL_UNGER, **overrides})
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    n = dataset.item_num - 1
    codes = hand_made_codes(n)
    rng = np.random.default_rng(0)
    table = tmp_path / "code_table.npz"
    np.savez(table, codes=np.vstack([[-1, -1, -1], codes]),
             integrated=rng.normal(size=(n + 1, 8)).astype(np.float32), codebook_size=np.int64(4))
    semantic = tmp_path / "semantic.npz"
    np.savez(semantic, embeddings=rng.normal(size=(n + 1, 12)).astype(np.float32))
    config["code_table_file"], config["semantic_embedding_file"] = str(table), str(semantic)
    torch.manual_seed(0)
    return config, UNGER(config, train._dataset), (train, valid, test)


def test_info_nce_equals_hand_computation():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    positives = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    dots = anchors @ positives.T  # [[1,1,0],[0,1,1],[1,2,1]]
    tau = 0.5
    expected = np.mean([-np.log(np.exp(dots[i, i] / tau) / np.exp(dots[i] / tau).sum()) for i in range(3)])
    assert info_nce(anchors, positives, tau, "dot").item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(np.mean([-np.log(np.exp(2) / (np.exp(2) + np.exp(2) + 1)),
                                              -np.log(np.exp(2) / (1 + np.exp(2) + np.exp(2))),
                                              -np.log(np.exp(2) / (np.exp(2) + np.exp(4) + np.exp(2)))]))


def test_modality_adaptation_layer_starts_as_layernorm_and_gradients_reach_everything():
    torch.manual_seed(0)
    mal = ModalityAdaptationLayer(12, 8)
    x = torch.randn(5, 12)
    out = mal(x)
    projected = mal.projection(x)
    assert torch.allclose(out, F.layer_norm(projected, (8,), eps=1e-6), atol=1e-5)  # adaLN-Zero init
    out.pow(2).sum().backward()
    assert mal.projection.weight.grad.abs().sum() > 0
    assert mal.adaln.modulation.weight.grad.abs().sum() > 0  # scale/shift are learned from the input
    assert not mal.adaln.norm.elementwise_affine


def test_din_scores_equal_a_per_candidate_loop():
    torch.manual_seed(0)
    history, candidates, weight = torch.randn(2, 4, 6), torch.randn(5, 6), torch.randn(6, 6)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    scores = din_target_attention_scores(history, mask, candidates, weight)
    for b in range(2):
        h = history[b][mask[b]]
        for n in range(5):
            attention = torch.softmax(h @ weight @ candidates[n] / 6 ** 0.5, dim=0)
            assert scores[b, n].item() == pytest.approx((attention * (h @ candidates[n])).sum().item(), rel=1e-5)


def test_stage1_loss_adds_alignment_and_exports_integrated_embeddings(tiny_data, tmp_path):
    config, _, (train, _, _) = tiny_unger(tiny_data, tmp_path)
    model = UNGERStage1(config, train._dataset)
    batch = next(iter(train))
    with_alignment = model.calculate_loss(batch)
    model.align_weight = 0.0
    assert model.calculate_loss(batch).item() < with_alignment.item()
    exported = model.export_embeddings()
    assert np.array_equal(exported["integrated"], exported["item_id"])  # integrated_embedding: item_id
    assert exported["adapted_semantic"].shape == (train._dataset.item_num, 16)


def test_distillation_loss_equals_hand_computation(tiny_data, tmp_path):
    _, model, _ = tiny_unger(tiny_data, tmp_path)
    hidden, targets = torch.randn(3, 32), torch.tensor([1, 5, 7])
    torch.manual_seed(1)
    loss = model.distillation_loss(hidden, targets)
    torch.manual_seed(1)
    negatives = model.sample_negatives(targets)
    assert not (negatives == targets[:, None]).any() and negatives.min() >= 1
    query = model.distill_projection(hidden)
    expected = 0.0
    for row in range(3):
        logits = [query[row] @ model.integrated_embeddings[targets[row]]]
        logits += [query[row] @ model.integrated_embeddings[n] for n in negatives[row]]
        expected += -torch.log_softmax(torch.stack(logits), dim=0)[0] / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_distill_token_does_not_change_generation_states(tiny_data, tmp_path):
    _, model, (train, _, _) = tiny_unger(tiny_data, tmp_path)
    model.eval()
    batch = next(iter(train))
    args = batch["item_id_list"], batch["item_length"], batch["item_id"]
    with_token, without = model.forward(*args, with_distill_token=True), model.forward(*args, with_distill_token=False)
    assert torch.allclose(with_token[:, :model.code_length], without, atol=1e-5)


def test_beam_search_with_full_beam_ranks_exactly_like_scoring_every_item(tiny_data, tmp_path):
    _, model, (_, _, test) = tiny_unger(tiny_data, tmp_path, beam_size=25)
    model.eval()
    interaction = next(iter(test))[0]
    with torch.no_grad():
        beam_scores = model.full_sort_predict(interaction)  # [B, n_items]
        n_users, n_items = beam_scores.shape
        exhaustive = torch.stack([model.predict(with_target(interaction, item)) for item in range(1, n_items)], dim=1)
    assert n_items - 1 == 20 and torch.isinf(beam_scores[:, 0]).all()
    assert torch.allclose(beam_scores[:, 1:], exhaustive, atol=1e-4)  # every item generated, same score
    assert torch.allclose(torch.logsumexp(exhaustive, dim=1), torch.zeros(n_users), atol=1e-4)


def with_target(interaction, item):
    """The same users with ``item`` as the candidate to score."""
    data = {key: interaction[key] for key in interaction.columns}
    data["item_id"] = torch.full((len(interaction),), item, dtype=torch.long)
    return Interaction(data)


def test_small_beam_returns_only_valid_unique_items_and_minus_inf_elsewhere(tiny_data, tmp_path):
    _, model, (_, _, test) = tiny_unger(tiny_data, tmp_path, beam_size=5, topk=[3, 5])
    model.eval()
    interaction = next(iter(test))[0]
    with torch.no_grad():
        scores = model.full_sort_predict(interaction)
        items, item_scores = model.generate(interaction["item_id_list"], interaction["item_length"])
    assert scores.shape == (len(interaction), model.n_items)
    assert (torch.isfinite(scores).sum(dim=1) == 5).all()  # exactly the beam's items get a score
    assert (items >= 1).all() and all(len(set(row.tolist())) == 5 for row in items)
    assert torch.equal(scores.gather(1, items), item_scores)
    assert model.generation_stats["invalid"] == 0 and model.generation_stats["short_lists"] == 0


def test_beam_smaller_than_topk_is_refused(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="beam_size"):
        tiny_unger(tiny_data, tmp_path, beam_size=5)


def test_mixed_precision_beam_search_returns_valid_items_close_to_float32(tiny_data, tmp_path):
    """enable_amp runs the network under autocast (bfloat16 here, on CPU); scores stay float32."""
    config, model, (train, _, _) = tiny_unger(tiny_data, tmp_path, enable_amp=True)
    assert model.autocast_dtype is torch.bfloat16
    model.eval()
    batch = cat_interactions(list(train))
    items, scores = model.generate(batch["item_id_list"], batch["item_length"], beam_size=20, top_k=20)
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
    assert ((items >= 1) & (items < model.n_items)).all()
    assert all(len(set(row)) == 20 for row in items.tolist())  # every real item once: beam = catalogue
    model.autocast_dtype = None
    _, full_scores = model.generate(batch["item_id_list"], batch["item_length"], beam_size=20, top_k=20)
    # Same distributions up to bfloat16 rounding of the network's activations (which did happen).
    assert torch.allclose(scores, full_scores, atol=0.05) and not torch.equal(scores, full_scores)


def test_amp_dtype_must_be_a_supported_name(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="amp_dtype must be one of"):
        tiny_unger(tiny_data, tmp_path, enable_amp=True, amp_dtype="float8")
