"""Image captioning as masked-token prediction with a uni-directional text mask (unilm ``BEiT3ForCaptioning``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from beit3_lightning.modeling.backbone import IncrementalState
from beit3_lightning.modeling.config import Beit3Config
from beit3_lightning.modeling.embeddings import POSITION_OFFSET
from beit3_lightning.modeling.heads.base import Beit3TaskModel


def captioning_attention_mask(image_len: int, text_len: int, device: torch.device | None = None) -> Tensor:
    """The "uni" mask (image_len + text_len)², 1 = blocked (unilm ``BEiT3ForCaptioning.forward``).

    Image tokens see all image tokens and no text; text tokens see all image tokens and the text up to and
    including themselves. Because image rows never see text, cached image keys/values stay valid while decoding.
    """
    total = image_len + text_len
    blocked = torch.ones(total, total, dtype=torch.long, device=device)
    blocked[:, :image_len] = 0
    causal = torch.tril(torch.ones(text_len, text_len, dtype=torch.long, device=device))
    blocked[image_len:, image_len:] = 1 - causal
    return blocked


class Beit3ForCaptioning(Beit3TaskModel):
    """Fused encoder under the uni mask → ``mlm_head`` Linear(D, vocab_size) on the text positions.

    Training feeds the whole caption with some tokens replaced by ``[MASK]`` and scores those positions.
    Decoding (``modeling.generation``) calls it with the image once, then text-only steps that reuse the cache.
    """

    def __init__(self, config: Beit3Config):
        super().__init__(config)
        self.mlm_head = nn.Linear(config.embed_dim, config.vocab_size)
        self._init_head(self.mlm_head)

    def forward(
        self,
        image: Tensor | None,
        text_ids: Tensor,
        padding_mask: Tensor | None,
        language_masked_pos: Tensor | None = None,
        text_len: int | None = None,
        incremental_state: IncrementalState | None = None,
    ) -> tuple[Tensor, IncrementalState | None]:
        """Token logits and the (extended) cache.

        image (B, 3, H, W) or None for an incremental step; text_ids / padding_mask (B, T), padding 1 = pad;
        language_masked_pos (B, T) 1 where logits are wanted → logits (n_masked, V) in row-major order,
        or (B, T, V) for every text position when None. ``text_len``: length of the whole text so far (the new
        ``text_ids`` are its last T tokens); defaults to T. ``incremental_state``: per-layer k/v cache, filled in place.
        """
        new_len = text_ids.shape[1]
        text_len = new_len if text_len is None else text_len
        image_len = self.beit3.vision_embed.num_position_embeddings()
        attn_mask = captioning_attention_mask(image_len, text_len, text_ids.device)  # (Lv + text_len)²
        positions = None
        if incremental_state is not None:
            for layer in range(self.get_num_layers()):
                incremental_state.setdefault(layer, {})
        if image is None:
            if incremental_state is None or not incremental_state.get(0):
                raise ValueError(
                    "Beit3ForCaptioning: a text-only step (image=None) needs the incremental_state filled by an "
                    "earlier call with the image; pass the image on the first decoding step"
                )
            # The new tokens are the last `new_len` of the text: their mask rows and their own positions.
            attn_mask = attn_mask[-new_len:]  # (new_len, Lv + text_len)
            first = text_len - new_len + POSITION_OFFSET
            positions = torch.arange(first, first + new_len, device=text_ids.device).unsqueeze(0)  # (1, new_len)
            padding_mask = None  # the reference decodes without padding
        out = self.beit3(
            textual_tokens=text_ids,
            visual_tokens=image,
            text_padding_position=padding_mask,
            attn_mask=attn_mask,
            incremental_state=incremental_state,
            positions=positions,
        )
        text_feats = out["encoder_out"] if image is None else out["encoder_out"][:, image_len:]  # (B, T, D)
        if language_masked_pos is not None:
            text_feats = text_feats[language_masked_pos.bool()]  # (n_masked, D)
        return self.mlm_head(text_feats), incremental_state
