"""BEiT v2's VQ-KD visual tokenizer (inference only): images in [0, 1] → one code id per 16x16 patch.

VQ-KD ("vector-quantized knowledge distillation", BEiT v2, arXiv 2208.06366) was trained as an encoder → quantiser →
decoder whose decoder regresses the features of a frozen teacher (CLIP ViT-B/16 or DINO ViT-B/16). For tokenizing only
the first half runs:

1. pre-processing: ``process_type="default"`` maps [0, 1] to [-1, 1] (``x * 255 / 127.5 - 1``, the same float ops as
   the official ``pre_process``); ``"imagenet_norm"`` uses the ImageNet mean/std instead. The released tokenizers
   use ``"default"``.
2. encoder: a BEiT-style ViT-B/16: patch conv, cls token, learned absolute position embedding, 12 pre-norm blocks
   (LayerNorm eps 1e-6; q/v biases but no k bias; exact GELU; no layer scale, since the official ``init_values=0``
   creates no ``gamma`` parameters; no relative position bias), no final norm on the sequence; the *patch* tokens
   (cls dropped) go through ``fc_norm`` (the official ``use_mean_pooling=True`` turns ``norm`` into an identity
   and applies ``fc_norm`` to the patch tokens when ``return_patch_tokens=True``).
3. ``encode_task_layer``: Linear(D, D) → Tanh → Linear(D, code_dim).
4. quantiser: l2-normalise each patch feature and take the nearest codebook row in squared Euclidean distance
   ``|z|² + |e|² - 2 z·e`` (the official formula, on the stored codebook as is; its rows are unit vectors, so this
   is the cosine-nearest code).

Parameter names equal the official ``VQKD`` state-dict keys (``encoder.*``, ``encode_task_layer.*``,
``quantize.embedding.weight``), so the released ``.pth`` files load without renaming; :func:`load_vqkd` drops the
training-only entries and says which.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from beit3_lightning.modeling.checkpoint import CheckpointError, read_checkpoint, unwrap_state_dict

log = logging.getLogger(__name__)

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
PROCESS_TYPES = ("default", "imagenet_norm")


@dataclass(frozen=True)
class VQKDConfig:
    """The tokenizing half of a VQ-KD model. Defaults are the encoder every released tokenizer uses."""

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    codebook_size: int = 8192  # official ``n_code`` / ``n_embed``
    codebook_dim: int = 32  # official ``code_dim`` / ``embed_dim`` of the quantiser
    process_type: str = "default"

    def __post_init__(self) -> None:
        if self.process_type not in PROCESS_TYPES:
            raise ValueError(f"process_type must be one of {PROCESS_TYPES}, got {self.process_type!r}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @classmethod
    def from_name(cls, name: str, **overrides) -> VQKDConfig:
        if name not in VQKD_PRESETS:
            raise ValueError(f"unknown VQ-KD tokenizer {name!r}; known: {sorted(VQKD_PRESETS)}")
        return replace(VQKD_PRESETS[name].config, **overrides)


@dataclass(frozen=True)
class VQKDPreset:
    """A released tokenizer: its encoder config and where the weights were published (BEiT v2 TOKENIZER.md)."""

    config: VQKDConfig
    file_name: str
    url: str
    teacher: str  # what the (dropped) decoder regressed; does not change tokenizing
    decoder_depth: int  # ditto: the decoder is not used for tokenizing


_RELEASE_URL = "https://github.com/addf400/files/releases/download/BEiT-v2/"


def _preset(name: str, sha: str, teacher: str, decoder_depth: int) -> VQKDPreset:
    file_name = f"{name}-{sha}.pth"
    return VQKDPreset(VQKDConfig(), file_name, _RELEASE_URL + file_name, teacher, decoder_depth)


# All three share the encoder (ViT-B/16 at 224, 8192 codes of dim 32); they differ only in decoder depth and teacher.
VQKD_PRESETS: dict[str, VQKDPreset] = {
    "vqkd_encoder_base_decoder_3x768x12_clip": _preset(
        "vqkd_encoder_base_decoder_3x768x12_clip", "d5036aa7", "CLIP ViT-B/16", 3
    ),
    "vqkd_encoder_base_decoder_1x768x12_clip": _preset(
        "vqkd_encoder_base_decoder_1x768x12_clip", "d93179da", "CLIP ViT-B/16", 1
    ),
    "vqkd_encoder_base_decoder_1x768x12_dino": _preset(
        "vqkd_encoder_base_decoder_1x768x12_dino", "663c55d7", "DINO ViT-B/16", 1
    ),
}
DEFAULT_VQKD = "vqkd_encoder_base_decoder_3x768x12_clip"


# ----- encoder ---------------------------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    def __init__(self, cfg: VQKDConfig):
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: Tensor) -> Tensor:
        # (B, 3, H, W) -> (B, D, H/p, W/p) -> (B, N, D), patches row-major
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with one bias-free qkv matrix plus separate q and v biases (k has no bias)."""

    def __init__(self, cfg: VQKDConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        dim = cfg.embed_dim
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))  # (3D,): k bias is zero
        qkv = F.linear(x, self.qkv.weight, bias)  # (B, L, 3D)
        qkv = qkv.reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)  # (3, B, H, L, Dh)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, H, L, Dh); scale Dh^-0.5
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, cfg: VQKDConfig):
        super().__init__()
        hidden = int(cfg.embed_dim * cfg.mlp_ratio)
        self.fc1 = nn.Linear(cfg.embed_dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, cfg.embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block without layer scale."""

    def __init__(self, cfg: VQKDConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.mlp = Mlp(cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VQKDEncoder(nn.Module):
    """The VQ-KD encoder ViT; returns the ``fc_norm``-ed patch tokens (B, N, D)."""

    def __init__(self, cfg: VQKDConfig):
        super().__init__()
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, cfg.embed_dim))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.fc_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)  # (B, N, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, D)
        x = torch.cat((cls, x), dim=1) + self.pos_embed  # (B, 1 + N, D)
        for block in self.blocks:
            x = block(x)
        return self.fc_norm(x[:, 1:])  # (B, N, D): cls dropped


class Codebook(nn.Module):
    """Holds ``embedding.weight`` (K, C) under the official key ``quantize.embedding.weight``."""

    def __init__(self, cfg: VQKDConfig):
        super().__init__()
        self.embedding = nn.Embedding(cfg.codebook_size, cfg.codebook_dim)

    def forward(self, z: Tensor) -> Tensor:
        """l2-normalised features (..., C) → nearest code ids (...) long."""
        codes = self.embedding.weight  # (K, C)
        flat = z.reshape(-1, z.shape[-1])  # (M, C)
        dist = flat.pow(2).sum(1, keepdim=True) + codes.pow(2).sum(1) - 2 * flat @ codes.t()  # (M, K)
        return dist.argmin(dim=1).view(z.shape[:-1])


# ----- tokenizer -------------------------------------------------------------------------------------------------
class VQKDTokenizer(nn.Module):
    """BEiT v2 VQ-KD tokenizer following :class:`~beit3_lightning.modeling.visual_tokenizers.base.VisualTokenizer`.

    Build with :func:`load_vqkd` (or :meth:`from_checkpoint`) to get the released weights; the constructor alone gives
    untrained (zero / default-initialised) weights. Frozen: ``eval()`` and ``requires_grad=False``.

    Precision: the pre-processing, ``encode_task_layer`` and the codebook search always run in float32 with autocast
    off, as the official ``encode`` does; the encoder follows the caller's autocast, or runs in ``encoder_dtype``
    (e.g. ``torch.bfloat16``) when its weights were cast to it (``load_vqkd(..., encoder_dtype=...)``).
    """

    def __init__(self, config: VQKDConfig | None = None):
        super().__init__()
        self.config = config or VQKDConfig()
        cfg = self.config
        self.codebook_size = cfg.codebook_size
        self.image_size = cfg.img_size
        self.patch_size = cfg.patch_size
        self.encoder = VQKDEncoder(cfg)
        self.encode_task_layer = nn.Sequential(
            nn.Linear(cfg.embed_dim, cfg.embed_dim), nn.Tanh(), nn.Linear(cfg.embed_dim, cfg.codebook_dim)
        )
        self.quantize = Codebook(cfg)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1), persistent=False)
        # keys of the checkpoint that load_vqkd left out, by group (see VQKD_SKIPPED_GROUPS)
        self.skipped_keys: dict[str, list[str]] = {}
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_checkpoint(
        cls,
        source: str | Path | Mapping[str, object],
        name: str = DEFAULT_VQKD,
        *,
        config: VQKDConfig | None = None,
        encoder_dtype: torch.dtype = torch.float32,
    ) -> VQKDTokenizer:
        return load_vqkd(source, name, config=config, encoder_dtype=encoder_dtype)

    def pre_process(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] → the encoder's input range (float32)."""
        x = images.float()
        if self.config.process_type == "default":
            return x * 255.0 / 127.5 - 1.0  # [-1, 1]; the official code's float ops, for bit parity
        return (x - self.pixel_mean) / self.pixel_std

    def encode_features(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] → l2-normalised features (B, N, codebook_dim) float32, before quantisation."""
        if images.ndim != 4 or images.shape[1] != self.config.in_chans:
            raise ValueError(f"expected images (B, {self.config.in_chans}, H, W), got {tuple(images.shape)}")
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"the VQ-KD tokenizer expects {self.image_size}x{self.image_size} images, got "
                f"{images.shape[-2]}x{images.shape[-1]}"
            )
        x = self.pre_process(images)
        x = self.encoder(x.to(self.encoder.pos_embed.dtype))  # (B, N, D)
        with torch.autocast(device_type=x.device.type, enabled=False):
            z = self.encode_task_layer(x.float())  # (B, N, C)
            return F.normalize(z, p=2, dim=-1)

    @torch.no_grad()
    def get_codebook_indices(self, images: Tensor) -> Tensor:
        """(B, 3, image_size, image_size) in [0, 1] → code ids (B, N) long, N = (image_size // patch_size)²."""
        z = self.encode_features(images)
        with torch.autocast(device_type=z.device.type, enabled=False):
            return self.quantize(z)  # (B, N)


# ----- loading ---------------------------------------------------------------------------------------------------
# Checkpoint entries that tokenizing does not use, by group: key prefix → why it is not needed.
VQKD_SKIPPED_GROUPS: dict[str, str] = {
    "decoder.": "decoder ViT: rebuilds teacher features from the quantised codes, a training-time objective only",
    "decode_task_layer.": "projection of the decoder output to the teacher's feature size; training only",
    "teacher_model.": "frozen CLIP/DINO teacher that produced the regression targets; training only",
    "scaling_layer.": "input normalisation for the teacher; training only",
    "loss": "loss-module state of the training run",
    "quantize.cluster_size": "code-usage statistic kept for logging; not used to pick a code",
    "quantize.embedding.cluster_size": "EMA code counts for the codebook update during training",
    "quantize.embedding.embed_avg": "EMA sum of assigned features for the codebook update during training",
    "quantize.embedding.initted": "flag saying the k-means initialisation is done; the trained codebook is final",
}


def _skip_group(key: str) -> str | None:
    return next((prefix for prefix in VQKD_SKIPPED_GROUPS if key.startswith(prefix)), None)


def load_vqkd(
    source: str | Path | Mapping[str, object],
    name: str = DEFAULT_VQKD,
    *,
    config: VQKDConfig | None = None,
    encoder_dtype: torch.dtype = torch.float32,
) -> VQKDTokenizer:
    """A frozen :class:`VQKDTokenizer` with the weights of an official VQ-KD checkpoint.

    ``source``: a ``.pth`` path (read with ``weights_only=True``) or an already loaded object. Both layouts are
    accepted: ``{"model": state}`` / ``{"state_dict": state}`` (what the official loader unwraps) or a bare state
    dict. ``name`` picks the preset config (see :data:`VQKD_PRESETS`); ``config`` overrides it.

    Only ``encoder.*``, ``encode_task_layer.*`` and ``quantize.embedding.weight`` are loaded. The other official
    entries are skipped by group (:data:`VQKD_SKIPPED_GROUPS`): the decoder, its task layer, the teacher and its
    input scaling only produce and fit the distillation target during training, and the quantiser's EMA buffers
    (``cluster_size``, ``embed_avg``, ``initted``) only update or initialise the codebook during training; the code
    lookup needs the codebook weight alone. The skipped keys are logged and kept in ``tokenizer.skipped_keys``.

    Raises :class:`~beit3_lightning.modeling.checkpoint.CheckpointError` (a ``ValueError``) when a needed key is
    missing, a key is neither needed nor in a skipped group (e.g. layer-scale ``gamma`` or ``encoder.norm`` of a
    differently configured encoder), or a shape differs from the config.
    """
    cfg = config or VQKDConfig.from_name(name)
    if isinstance(source, Mapping):
        state = unwrap_state_dict(source, "model|state_dict", source_name="VQ-KD state dict")
        source_name = "VQ-KD state dict"
    else:
        state = read_checkpoint(source, "model|state_dict").state
        source_name = str(source)

    tokenizer = VQKDTokenizer(cfg)
    expected = tokenizer.state_dict()
    kept: dict[str, Tensor] = {}
    skipped: dict[str, list[str]] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key in expected:
            kept[key] = value
        elif (group := _skip_group(key)) is not None:
            skipped.setdefault(group, []).append(key)
        else:
            unknown.append(key)

    missing = [k for k in expected if k not in kept]
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs config {tuple(expected[k].shape)}"
        for k, v in kept.items()
        if v.shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    if unknown:
        problems.append(f"unexpected keys ({len(unknown)}): {unknown[:10]}{' ...' if len(unknown) > 10 else ''}")
    if mismatched:
        problems.append(f"shape mismatches: {mismatched[:10]}")
    if problems:
        raise CheckpointError(
            f"{source_name} does not fit the VQ-KD tokenizer config {asdict(cfg)}: " + "; ".join(problems)
        )

    tokenizer.load_state_dict(kept, strict=True)
    tokenizer.encoder.to(encoder_dtype)
    tokenizer.skipped_keys = skipped
    if skipped:
        log.info(
            "VQ-KD %s: loaded %d tensors, skipped (not needed for tokenizing) %s",
            name if config is None else "custom config",
            len(kept),
            ", ".join(f"{prefix}* ({len(keys)})" for prefix, keys in skipped.items()),
        )
    return tokenizer
