"""Losses: hand-computed values and brute-force re-derivations of the unilm losses."""

import math

import pytest
import torch
import torch.nn.functional as F

from beit3_lightning.losses import (
    CaptioningLoss,
    ClipLoss,
    label_smoothing_cross_entropy,
    soft_target_cross_entropy,
    vqa_bce_loss,
)

# log([1, 1, 2]) -> probabilities exactly [0.25, 0.25, 0.5]
QUARTER_QUARTER_HALF = torch.log(torch.tensor([[1.0, 1.0, 2.0]]))


def test_label_smoothing_cross_entropy_hand_value():
    # nll = -ln 0.5 = ln 2; mean(-log p) = (ln4 + ln4 + ln2)/3 = 5 ln2 / 3
    # loss = 0.9 ln2 + 0.1 * 5 ln2 / 3 = 0.739357
    expected = 0.9 * math.log(2) + 0.1 * 5 * math.log(2) / 3
    loss = label_smoothing_cross_entropy(QUARTER_QUARTER_HALF, torch.tensor([2]), smoothing=0.1)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.739357, abs=1e-6)


def test_label_smoothing_zero_is_plain_cross_entropy_and_bad_eps_raises():
    logits, target = torch.randn(5, 7), torch.randint(0, 7, (5,))
    assert torch.allclose(label_smoothing_cross_entropy(logits, target, 0.0), F.cross_entropy(logits, target))
    with pytest.raises(ValueError, match="label smoothing"):
        label_smoothing_cross_entropy(logits, target, 1.0)


def test_soft_target_cross_entropy_hand_value():
    # -(0.5 ln 0.25 + 0.5 ln 0.5) = 0.5 ln4 + 0.5 ln2 = 1.5 ln2 = 1.039721
    loss = soft_target_cross_entropy(QUARTER_QUARTER_HALF, torch.tensor([[0.5, 0.0, 0.5]]))
    assert loss.item() == pytest.approx(1.5 * math.log(2), abs=1e-6)
    with pytest.raises(ValueError, match="differ"):
        soft_target_cross_entropy(QUARTER_QUARTER_HALF, torch.ones(1, 4))


def test_vqa_bce_loss_is_sum_over_answers_mean_over_batch_in_fp32():
    # sigmoid(0) = 0.5, so every element costs ln2 whatever the target: 4 answers -> 4 ln2 = 2.772589
    logits = torch.zeros(1, 4, dtype=torch.float16)
    loss = vqa_bce_loss(logits, torch.tensor([[1.0, 0.0, 0.3, 0.0]]))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(4 * math.log(2), abs=1e-5)

    logits, targets = torch.randn(3, 5), torch.rand(3, 5)
    per_element = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    assert vqa_bce_loss(logits, targets).item() == pytest.approx(per_element.sum(1).mean().item(), rel=1e-6)


def test_clip_loss_single_process_hand_value():
    feats = torch.eye(2)
    # scale exp(0) = 1: logits = I, CE of row [1, 0] for class 0 = ln(1 + e^-1) = 0.313262 in both directions
    out = ClipLoss()(feats, feats, torch.tensor(0.0))
    assert out.loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    # scale exp(ln 2) = 2: ln(1 + e^-2) = 0.126928
    out = ClipLoss()(feats, feats, torch.tensor(math.log(2.0)))
    assert out.loss.item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)
    # not clamped (open_clip clamps at 100): scale 1000 comes through unchanged
    out = ClipLoss()(feats, feats, torch.tensor(math.log(1000.0)))
    assert out.logits_per_image.max().item() == pytest.approx(1000.0, rel=1e-5)


def test_clip_loss_gathered_ranks_average_to_the_full_batch_loss():
    torch.manual_seed(0)
    images, texts = F.normalize(torch.randn(4, 8), dim=-1), F.normalize(torch.randn(4, 8), dim=-1)
    scale = torch.tensor(math.log(10.0))
    full = ClipLoss()(images, texts, scale).loss

    per_rank = []
    for rank in range(2):
        img_local, txt_local = images[2 * rank : 2 * rank + 2], texts[2 * rank : 2 * rank + 2]

        def fake_all_gather(local, img_local=img_local):
            # what Lightning's all_gather returns on 2 processes: (world, B, D)
            return (images if local is img_local else texts).view(2, 2, -1)

        out = ClipLoss()(img_local, txt_local, scale, gather_fn=fake_all_gather, rank=rank)
        assert out.logits_per_image.shape == (2, 4)
        per_rank.append(out.loss)
    # labels arange(B) + B*rank pick the diagonal of the full matrix, so the mean over ranks is the full loss
    assert ((per_rank[0] + per_rank[1]) / 2).item() == pytest.approx(full.item(), rel=1e-6)
    with pytest.raises(ValueError, match="gather_fn returned shape"):
        ClipLoss()(images[:2], texts[:2], scale, gather_fn=lambda t: torch.zeros(3, 8), rank=0)


def test_captioning_loss_hand_value():
    # V = 4, uniform p = 0.25, gold 0: q = [0.9, 0.1/3, 0.1/3, 0.1/3]
    # KL = 0.9 ln(0.9/0.25) + 0.1 ln((0.1/3)/0.25) = 1.152841 - 0.201490 = 0.951351
    expected = 0.9 * math.log(0.9 / 0.25) + 0.1 * math.log((0.1 / 3) / 0.25)
    loss = CaptioningLoss()(torch.zeros(1, 4), torch.tensor([0]), global_step=0)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.951351, abs=1e-6)


def test_captioning_loss_matches_brute_force_kl():
    torch.manual_seed(1)
    logits, target = torch.randn(6, 5), torch.randint(0, 5, (6,))
    eps, vocab = 0.1, 5
    brute = []
    for row, gold in zip(logits.tolist(), target.tolist()):
        norm = math.log(sum(math.exp(v) for v in row))
        kl = 0.0
        for c, value in enumerate(row):
            q = 1 - eps if c == gold else eps / (vocab - 1)
            kl += q * (math.log(q) - (value - norm))
        brute.append(kl)
    per_token = CaptioningLoss(label_smoothing=eps).per_token(logits, target)
    assert per_token.tolist() == pytest.approx(brute, abs=1e-5)
    loss = CaptioningLoss(label_smoothing=eps)(logits, target, global_step=0)
    assert loss.item() == pytest.approx(sum(brute) / len(brute), abs=1e-5)


def test_captioning_loss_drops_worst_tokens_only_after_the_threshold_step():
    torch.manual_seed(2)
    logits, target = torch.randn(5, 7), torch.randint(0, 7, (5,))
    criterion = CaptioningLoss(label_smoothing=0.1, drop_worst_ratio=0.2, drop_worst_after=100)
    per_token = criterion.per_token(logits, target)
    # 5 tokens, ratio 0.2 -> keep int(5 * 0.8) = 4 lowest
    kept_mean = per_token.sort().values[:4].mean()
    assert criterion(logits, target, global_step=100).item() == pytest.approx(per_token.mean().item(), abs=1e-6)
    assert criterion(logits, target, global_step=101).item() == pytest.approx(kept_mean.item(), abs=1e-6)
    # a single masked token still gives a finite loss (the reference's k = 0 would give NaN)
    assert torch.isfinite(criterion(logits[:1], target[:1], global_step=101))
