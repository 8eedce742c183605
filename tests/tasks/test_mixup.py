"""Mixup/CutMix (timm ``Mixup`` batch-mode semantics, as unilm uses it for ImageNet)."""

import numpy as np
import pytest
import torch

from beit3_lightning.mixup import Mixup, mixup_target, smoothed_one_hot


class FixedDraws:
    """Stand-in for np.random.RandomState returning chosen values (to hand-check box geometry)."""

    def __init__(self, randints: list[int]) -> None:
        self.randints = list(randints)

    def randint(self, low: int, high: int) -> int:
        value = self.randints.pop(0)
        assert low <= value < high
        return value


def constant_batch(batch: int = 4, size: int = 10) -> torch.Tensor:
    """Image i is filled with the value i, so every pixel tells where it came from."""
    return torch.arange(batch, dtype=torch.float32).view(batch, 1, 1, 1).expand(batch, 3, size, size).clone()


def test_smoothed_one_hot_and_mixed_targets_hand_values():
    # ε = 0.1, C = 4: off = 0.025, on = 0.9 + 0.025 = 0.925
    one_hot = smoothed_one_hot(torch.tensor([2]), 4, 0.1)
    assert one_hot.tolist()[0] == pytest.approx([0.025, 0.025, 0.925, 0.025])
    # targets [0, 1], λ = 0.7: row 0 = 0.7·onehot(0) + 0.3·onehot(1)
    mixed = mixup_target(torch.tensor([0, 1]), 4, lam=0.7, smoothing=0.1)
    assert mixed[0].tolist() == pytest.approx([0.7 * 0.925 + 0.3 * 0.025, 0.7 * 0.025 + 0.3 * 0.925, 0.025, 0.025])
    assert mixed.sum(dim=1).tolist() == pytest.approx([1.0, 1.0])


def test_cutmix_box_clipped_at_border_corrects_lambda():
    # H = W = 10, λ = 0.75 -> cut side int(10·√0.25) = 5; centre (cy, cx) = (0, 9)
    # y: clip(0 − 2, 0, 10) = 0 .. clip(0 + 2) = 2; x: clip(9 − 2) = 7 .. clip(11, 0, 10) = 10
    mixup = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, rng=FixedDraws([0, 9]))
    box, lam = mixup.cutmix_box(10, 10, 0.75)
    assert box == (0, 2, 7, 10)
    assert lam == pytest.approx(1 - 2 * 3 / 100)  # 0.94, not the drawn 0.75


def test_cutmix_minmax_box_inside_image():
    # sides from randint(int(10·0.2), int(10·0.8)) = randint(2, 8): draws 4 and 6; corner randint(0, 10 − side)
    mixup = Mixup(cutmix_minmax=(0.2, 0.8), rng=FixedDraws([4, 6, 5, 3]))
    box, lam = mixup.cutmix_box(10, 10, 0.5)
    assert box == (5, 9, 3, 9)
    assert lam == pytest.approx(1 - 24 / 100)
    assert mixup.cutmix_alpha == 1.0  # forced on, as in timm


def test_mixup_blends_with_the_flipped_batch():
    images, targets = constant_batch(), torch.tensor([0, 1, 2, 3])
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=0.0, num_classes=4, rng=np.random.RandomState(3))
    mixed, soft = mixup(images, targets)
    draws = np.random.RandomState(3)
    draws.rand()  # the "mix this batch?" draw (prob = 1)
    lam = draws.beta(0.8, 0.8)
    # image i (value i) mixes with image 3 − i: λ·i + (1 − λ)(3 − i)
    for i in range(4):
        assert mixed[i].unique().item() == pytest.approx(lam * i + (1 - lam) * (3 - i), abs=1e-5)
    assert torch.allclose(soft, mixup_target(targets, 4, lam, 0.1))
    assert soft.sum(dim=1).tolist() == pytest.approx([1.0] * 4)
    assert images[0].unique().item() == 0.0  # input untouched


def test_cutmix_pasted_area_matches_corrected_lambda():
    images, targets = constant_batch(size=16), torch.tensor([0, 1, 2, 3])
    mixup = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, num_classes=4, rng=np.random.RandomState(5))
    mixed, soft = mixup(images, targets)
    pasted = (mixed[0] == 3.0).float().mean().item()  # image 0 receives pixels of image 3
    lam_from_targets = (soft[0, 0] - 0.025) / (0.925 - 0.025)  # weight of its own class
    assert 0.0 < pasted < 1.0
    assert lam_from_targets.item() == pytest.approx(1.0 - pasted, abs=1e-5)
    assert soft.sum(dim=1).tolist() == pytest.approx([1.0] * 4)


def test_switch_between_mixup_and_cutmix_is_repeatable_under_numpy_seed():
    images, targets = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 4, 5])
    mixup = Mixup(num_classes=6)  # global numpy generator, like timm
    np.random.seed(11)
    first = [mixup(images, targets) for _ in range(4)]
    np.random.seed(11)
    second = [mixup(images, targets) for _ in range(4)]
    for (x1, y1), (x2, y2) in zip(first, second):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_prob_zero_leaves_images_and_only_smooths_targets():
    images, targets = torch.randn(2, 3, 4, 4), torch.tensor([1, 0])
    mixed, soft = Mixup(prob=0.0, num_classes=3, rng=np.random.RandomState(0))(images, targets)
    assert torch.equal(mixed, images)
    assert torch.allclose(soft, smoothed_one_hot(targets, 3, 0.1))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="even batch"):
        Mixup(num_classes=3)(torch.randn(3, 3, 4, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="only 'batch'"):
        Mixup(mode="pair")
    with pytest.raises(ValueError, match="mixup_alpha > 0"):
        Mixup(mixup_alpha=0.0, cutmix_alpha=0.0)
