"""Masked data modeling (the BEiT-3 paper's one pretraining objective): the backbone plus two prediction heads.

* ``mlm_head`` Linear(D, vocab_size): the original token at every masked text position (monomodal texts and the
  text of image-text pairs). Same name and shape as the captioning head, whose checkpoints it can start from.
* ``mim_head`` Linear(D, codebook_size): the visual-tokenizer code of every masked patch (monomodal images and the
  image of pairs). Masked patches enter the backbone as its vision ``mask_token``.

Attention is bidirectional over the whole input (no uni mask) and the outputs are the final (normalised) encoder
states. The released pretrained checkpoints hold ~55M parameters beyond the backbone (276M vs 222M for base),
which is the size of these two heads at vocab 64010 / codebook 8192; their key names are not published, so
``init_from`` loads the backbone of any checkpoint and a head only where its name and shape match.
"""

from __future__ import annotations

from torch import Tensor, nn

from beit3_lightning.modeling.config import Beit3Config
from beit3_lightning.modeling.heads.base import Beit3TaskModel

# Codebook of the official visual tokenizer (BEiT v2's VQ-KD).
OFFICIAL_CODEBOOK_SIZE = 8192


class Beit3ForPretraining(Beit3TaskModel):
    """Backbone → ``mlm_head`` on masked text positions, ``mim_head`` on masked patches."""

    def __init__(self, config: Beit3Config, codebook_size: int = OFFICIAL_CODEBOOK_SIZE):
        super().__init__(config)
        if codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2, got {codebook_size}")
        self.codebook_size = codebook_size
        self.mlm_head = nn.Linear(config.embed_dim, config.vocab_size)
        self.mim_head = nn.Linear(config.embed_dim, codebook_size)
        self._init_head(self.mlm_head, self.mim_head)

    def unused_parameter_names(self) -> set[str]:
        """Every parameter is reached (the vision ``mask_token`` too) when a step has image and text batches."""
        return set()

    def forward(
        self,
        image: Tensor | None = None,
        image_mask: Tensor | None = None,
        text_ids: Tensor | None = None,
        padding_mask: Tensor | None = None,
        text_mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Logits at the masked positions of one batch kind (images, texts or image-text pairs).

        image (B, 3, H, W) and image_mask (B, N) bool, True = masked patch (replaced by the mask token);
        text_ids (B, T) with masked ids already replaced, padding_mask (B, T) 1 = pad, text_mask (B, T) bool,
        True = predicted position. Returns ``{"mim": (n_masked_patches, K), "mlm": (n_masked_tokens, V)}`` for
        the parts given, rows in row-major (batch, position) order.
        """
        out = self.beit3(
            textual_tokens=text_ids,
            visual_tokens=image,
            text_padding_position=padding_mask,
            vision_masked_position=image_mask,
        )
        x = out["encoder_out"]  # (B, L, D): [CLS, patches...] then text tokens
        logits: dict[str, Tensor] = {}
        image_len = 0
        if image is not None:
            image_len = self.beit3.vision_embed.num_position_embeddings()  # patches + CLS
            if image_mask is not None:
                patches = x[:, 1:image_len]  # (B, N, D)
                logits["mim"] = self.mim_head(patches[image_mask.bool()])  # (n_masked, K)
        if text_ids is not None and text_mask is not None:
            text = x[:, image_len:]  # (B, T, D)
            logits["mlm"] = self.mlm_head(text[text_mask.bool()])  # (n_masked, V)
        return logits
