"""Semantic segmentation: UperNet on multi-level features of the vision expert (the BEiT recipe of mmseg
``configs/beit/``, with BEiT-3's Multiway backbone in place of BEiT's ViT).

Pipeline, with the base model on a 512² crop (grid 32²)::

    image (B, 3, 512, 512)
      → backbone, vision expert only; outputs of layers out_indices (base 3, 5, 7, 11), CLS dropped
      → 4 maps (B, 768, 32, 32)
      → neck ×4, ×2, ×1, ×0.5 → (B, 768, 128²), (64²), (32²), (16²)        [mmseg Feature2Pyramid]
      → UperNet (PPM on the last level, FPN top-down, fuse) → logits (B, K, 128, 128) = 1/4 of the input
      → auxiliary FCN head on the third level → logits (B, K, 32, 32)  (training only, loss weight 0.4)

Module and state-dict names are mmseg's (``neck.upsample_4x.0.weight``, ``decode_head.psp_modules.0.1.conv.weight``,
``auxiliary_head.convs.0.bn.running_var``, ...), and ``tests/fixtures/segmentation_golden.pt`` holds outputs of
mmseg's own modules on random weights in that layout, so heads trained with mmseg load unchanged. A conv followed by
a norm is mmcv's ``ConvModule``: ``conv`` (no bias) → ``bn`` → ReLU.

The backbone keeps its official names (``beit3.*``), so every pretrained or fine-tuned BEiT-3 checkpoint initialises
it; the vision position table is resized to the crop when it is loaded (``checkpoint_filter_fn``). No final encoder
LayerNorm: features come from inside the stack (as BEiT's, which has ``final_norm=False``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from beit3_lightning.modeling.config import Beit3Config
from beit3_lightning.modeling.heads.base import Beit3TaskModel

# Layers whose outputs feed the neck, by depth (mmseg configs/beit: base (3, 5, 7, 11), large (7, 11, 15, 23)).
DEFAULT_OUT_INDICES: dict[int, tuple[int, ...]] = {12: (3, 5, 7, 11), 24: (7, 11, 15, 23)}
NECK_RESCALES = (4.0, 2.0, 1.0, 0.5)
PPM_POOL_SCALES = (1, 2, 3, 6)
# The auxiliary FCN head reads the third pyramid level (mmseg ``in_index=2``).
AUX_LEVEL = 2
# Auxiliary head width of the BEiT recipes (256), capped at the embedding width for small models.
AUX_CHANNELS = 256
DROPOUT = 0.1
IGNORE_INDEX = 255


def default_out_indices(num_layers: int) -> tuple[int, ...]:
    """The official layers for 12/24-layer models; otherwise 4 layers spread evenly, ending at the last one."""
    if num_layers in DEFAULT_OUT_INDICES:
        return DEFAULT_OUT_INDICES[num_layers]
    if num_layers < 4:
        raise ValueError(f"segmentation needs at least 4 layers for its 4 feature levels, got {num_layers}")
    return tuple(round(num_layers * (i + 1) / 4) - 1 for i in range(4))


def resize(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """Bilinear resize with ``align_corners=False`` (mmseg's ``resize`` as the BEiT heads call it)."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class ConvModule(nn.Module):
    """Conv (no bias: a norm follows) → BatchNorm → ReLU, with mmcv ``ConvModule``'s attribute names.

    The BatchNorm becomes SyncBatchNorm under DDP with Lightning's ``sync_batchnorm=True`` (same state-dict names).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.activate(self.bn(self.conv(x)))


class Feature2Pyramid(nn.Module):
    """Four same-resolution maps → a pyramid at ×4, ×2, ×1 and ×0.5 of it (mmseg ``Feature2Pyramid``)."""

    def __init__(self, embed_dim: int):
        super().__init__()
        self.upsample_4x = nn.Sequential(
            nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2),
            nn.BatchNorm2d(embed_dim),
            nn.GELU(),
            nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2),
        )
        self.upsample_2x = nn.Sequential(nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2))
        self.identity = nn.Identity()
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """4 × (B, D, h, w) → (B, D, 4h, 4w), (B, D, 2h, 2w), (B, D, h, w), (B, D, h/2, w/2)."""
        ops = (self.upsample_4x, self.upsample_2x, self.identity, self.maxpool)
        return [op(x) for op, x in zip(ops, features, strict=True)]


class DecodeHead(nn.Module):
    """What every mmseg decode head ends with: dropout, then a 1×1 classifier ``conv_seg``."""

    def __init__(self, channels: int, num_classes: int, dropout: float = DROPOUT):
        super().__init__()
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else None

    def cls_seg(self, feats: Tensor) -> Tensor:
        if self.dropout is not None:
            feats = self.dropout(feats)
        return self.conv_seg(feats)


class UPerHead(DecodeHead):
    """UperNet (Xiao et al. 2018) as mmseg ``UPerHead``: a pyramid pooling module (PPM) on the coarsest level,
    an FPN top-down path over the other levels, all levels resized to the finest one, concatenated and fused."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, num_levels: int = 4,
                 pool_scales: tuple[int, ...] = PPM_POOL_SCALES, dropout: float = DROPOUT):  # fmt: skip
        super().__init__(channels, num_classes, dropout)
        self.psp_modules = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(scale), ConvModule(in_channels, channels, 1)) for scale in pool_scales
        )
        self.bottleneck = ConvModule(in_channels + len(pool_scales) * channels, channels, 3, padding=1)
        self.lateral_convs = nn.ModuleList(ConvModule(in_channels, channels, 1) for _ in range(num_levels - 1))
        self.fpn_convs = nn.ModuleList(ConvModule(channels, channels, 3, padding=1) for _ in range(num_levels - 1))
        self.fpn_bottleneck = ConvModule(num_levels * channels, channels, 3, padding=1)

    def psp_forward(self, x: Tensor) -> Tensor:
        """(B, D, h, w) → pooled at each scale, projected, resized back, concatenated with x → (B, C, h, w)."""
        pooled = [resize(branch(x), x.shape[2:]) for branch in self.psp_modules]  # each (B, C, h, w)
        return self.bottleneck(torch.cat([x, *pooled], dim=1))

    def forward(self, levels: list[Tensor]) -> Tensor:
        """Pyramid levels, finest first → logits (B, K, h0, w0) at the finest level's resolution."""
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, levels[:-1])]  # (B, C, h_i, w_i)
        laterals.append(self.psp_forward(levels[-1]))
        for i in range(len(laterals) - 1, 0, -1):  # top-down: add each coarser level to the next finer one
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals[:-1])]
        outs.append(laterals[-1])  # the PPM level gets no extra conv
        finest = outs[0].shape[2:]
        outs = [outs[0], *(resize(x, finest) for x in outs[1:])]
        return self.cls_seg(self.fpn_bottleneck(torch.cat(outs, dim=1)))  # (B, K, h0, w0)


class FCNHead(DecodeHead):
    """Auxiliary head (mmseg ``FCNHead``, one 3×3 conv, no input concat) on one pyramid level."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, level: int = AUX_LEVEL,
                 dropout: float = DROPOUT):  # fmt: skip
        super().__init__(channels, num_classes, dropout)
        self.level = level
        self.convs = nn.Sequential(ConvModule(in_channels, channels, 3, padding=1))

    def forward(self, levels: list[Tensor]) -> Tensor:
        return self.cls_seg(self.convs(levels[self.level]))  # (B, K, h_level, w_level)


class Beit3ForSemanticSegmentation(Beit3TaskModel):
    """BEiT-3 backbone (vision expert) + Feature2Pyramid neck + UperNet decode head + auxiliary FCN head.

    Args:
        config: backbone config; ``img_size`` is the training crop (512 base, 640 large). ``normalize_output`` is
            forced off: no final LayerNorm is used.
        num_classes: classes K (150 for ADE20k after ``reduce_zero_label``).
        out_indices: the 4 layers whose outputs feed the neck (default: the official ones for 12 / 24 layers).
        channels: UperNet width (default: the embedding width, as the BEiT recipes: 768 base, 1024 large).
        aux_channels: auxiliary head width (default min(256, embedding width)); 0 drops the auxiliary head.
    """

    def __init__(self, config: Beit3Config, num_classes: int = 150, out_indices: tuple[int, ...] | None = None,
                 channels: int | None = None, aux_channels: int | None = None):  # fmt: skip
        super().__init__(config.replace(normalize_output=False))
        dim = config.embed_dim
        self.num_classes = num_classes
        self.out_indices = tuple(out_indices) if out_indices is not None else default_out_indices(config.num_layers)
        if len(self.out_indices) != 4 or not all(0 <= i < config.num_layers for i in self.out_indices):
            raise ValueError(f"out_indices must be 4 layer indices in [0, {config.num_layers}), got {out_indices}")
        channels = channels if channels is not None else dim
        aux_channels = aux_channels if aux_channels is not None else min(AUX_CHANNELS, dim)
        self.neck = Feature2Pyramid(dim)
        self.decode_head = UPerHead(dim, channels, num_classes)
        self.auxiliary_head = FCNHead(dim, aux_channels, num_classes) if aux_channels > 0 else None
        self._init_segmentation_head(
            self.neck, self.decode_head, *([self.auxiliary_head] if self.auxiliary_head else [])
        )

    def _init_segmentation_head(self, *modules: nn.Module) -> None:
        """mmseg's init: convs Kaiming-normal (fan_out, ReLU), norms 1 / 0, the classifiers N(0, 0.01) with zero
        bias; the neck's transposed convs keep PyTorch's default init (mmseg sets none)."""
        for module in modules:
            for sub in module.modules():
                if isinstance(sub, ConvModule):
                    nn.init.kaiming_normal_(sub.conv.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(sub, nn.BatchNorm2d):
                    nn.init.ones_(sub.weight)
                    nn.init.zeros_(sub.bias)
                elif isinstance(sub, DecodeHead):
                    nn.init.normal_(sub.conv_seg.weight, std=0.01)
                    nn.init.zeros_(sub.conv_seg.bias)

    def features(self, image: Tensor) -> list[Tensor]:
        """Images (B, 3, H, W) → outputs of the ``out_indices`` layers as maps (B, D, H/p, W/p), CLS dropped."""
        hidden = self.beit3(visual_tokens=image, return_hidden_states=True)["hidden_states"]  # inputs + last output
        b, _, h, w = image.shape
        grid_h, grid_w = h // self.config.patch_size, w // self.config.patch_size
        maps = []
        for index in self.out_indices:
            tokens = hidden[index + 1][:, 1:]  # output of layer `index`, patches only: (B, N, D)
            maps.append(tokens.transpose(1, 2).reshape(b, -1, grid_h, grid_w))  # (B, D, h, w)
        return maps

    def forward(self, image: Tensor, with_aux: bool | None = None) -> dict[str, Tensor]:
        """Images (B, 3, S, S) at the model's ``img_size`` → ``{"logits": (B, K, S/4, S/4)}`` plus
        ``"aux_logits"`` (B, K, S/16, S/16) when ``with_aux`` (default: in training mode, if the head exists)."""
        levels = self.neck(self.features(image))
        out = {"logits": self.decode_head(levels)}
        if with_aux is None:
            with_aux = self.training
        if with_aux and self.auxiliary_head is not None:
            out["aux_logits"] = self.auxiliary_head(levels)
        return out

    def unused_parameter_names(self) -> set[str]:
        # Images only: the language expert, the text embedding, and any layer after the last feature layer.
        unused = super().unused_parameter_names() | self._whole_expert("B") | {"beit3.text_embed.weight"}
        last = max(self.out_indices)
        for name, _ in self.named_parameters():
            if name.startswith("beit3.encoder.layers.") and int(name.split(".")[3]) > last:
                unused.add(name)
        return unused
