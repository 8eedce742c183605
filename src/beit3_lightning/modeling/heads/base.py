"""Common base of the task models (unilm ``BEiT3Wrapper``): the backbone as ``beit3`` plus timm-style hooks.

DDP and parameters a task never reaches
---------------------------------------
DDP (without ``find_unused_parameters``) stops with an error when a parameter takes no part in the autograd graph.
Which ones do not: the vision ``mask_token`` in every task (it only serves masked-image pre-training), and in image
classification the whole language expert, the text positions and the text embedding. (Modules whose outputs a head
discards, e.g. the text tokens' last-layer FFN in VQA, are still in the graph through the Multiway concatenation and
receive zero gradients; DDP is fine with those and the reference's AdamW decays them, so we leave them alone.)

We *freeze* the unreached ones (``freeze_unused_parameters_``) instead of adding ``0 * param.sum()`` to the output,
because freezing (a) costs nothing in forward/backward, (b) lets DDP run with ``find_unused_parameters=False``, and
(c) keeps the optimiser's behaviour identical to the reference: there these parameters have ``grad=None`` and AdamW
skips them, while a ``0 *`` term would give them zero gradients and let weight decay shrink them. Their keys stay in
the state dict, so official checkpoints load and save unchanged. ``unused_parameter_names`` is derived from the
architecture and checked against autograd in ``tests/test_heads.py``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from beit3_lightning.modeling.backbone import Beit3Backbone
from beit3_lightning.modeling.config import Beit3Config
from beit3_lightning.modeling.init import init_weights_

BACKBONE_PREFIX = "beit3."
# Heads whose output starts near zero (ImageNet head, NLVR2 MLP): weights and biases × 0.001 after init.
HEAD_INIT_SCALE = 0.001
# unilm ``BEiT3Wrapper.no_weight_decay``; names absent from a model ('pos_embed', 'cls_token') are dropped.
OFFICIAL_NO_WEIGHT_DECAY = frozenset(
    {"pos_embed", "cls_token", "beit3.encoder.embed_positions.A.weight", "beit3.vision_embed.cls_token", "logit_scale"}
)
# Only masked-image modelling uses it; no fine-tuning forward does.
MASK_TOKEN = "beit3.vision_embed.mask_token"


class Beit3TaskModel(nn.Module):
    """A task head on top of ``Beit3Backbone``; subclasses add their head modules and ``forward``."""

    def __init__(self, config: Beit3Config):
        super().__init__()
        self.config = config
        self.beit3 = Beit3Backbone(config)  # initialised by its own constructor, as unilm ``_init_weights``

    def _init_head(self, *modules: nn.Module, scaled: Iterable[nn.Linear] = ()) -> None:
        """Official head init: ``init_weights_`` on every head module, then ×0.001 on the ``scaled`` linears."""
        for module in modules:
            module.apply(init_weights_)
        with torch.no_grad():
            for linear in scaled:
                linear.weight.mul_(HEAD_INIT_SCALE)
                linear.bias.mul_(HEAD_INIT_SCALE)

    # ----- timm-style hooks used by the optimiser factory and the trainer --------------------------------------
    def get_num_layers(self) -> int:
        return self.beit3.get_num_layers()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each encoder layer in backward (state-dict keys unchanged)."""
        self.beit3.set_grad_checkpointing(enable)

    def no_weight_decay(self) -> set[str]:
        """Parameter names kept out of weight decay besides 1-D tensors and biases (the official set)."""
        names = {n for n, _ in self.named_parameters()}
        from_backbone = {BACKBONE_PREFIX + n for n in self.beit3.no_weight_decay()}
        return (set(OFFICIAL_NO_WEIGHT_DECAY) | from_backbone) & names

    # ----- parameters without gradient (see the module docstring) ----------------------------------------------
    def unused_parameter_names(self) -> set[str]:
        """Names of the parameters this task's training forward never reaches."""
        return {MASK_TOKEN}

    def freeze_unused_parameters_(self) -> list[str]:
        """Set ``requires_grad=False`` on ``unused_parameter_names()`` (call before wrapping in DDP); sorted names."""
        unused = self.unused_parameter_names()
        for name, param in self.named_parameters():
            if name in unused:
                param.requires_grad_(False)
        return sorted(unused)

    def _whole_expert(self, expert: str) -> set[str]:
        """Every encoder parameter of one Multiway expert (``A`` vision, ``B`` language), positions included."""
        marker = f".{expert}."
        return {n for n, _ in self.named_parameters() if n.startswith("beit3.encoder.") and marker in n}
