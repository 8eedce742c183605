"""One pretraining step from shards under Lightning DDP on CPU (gloo), run by ``test_shards_training.py``:

    python tests/integration/ddp_pretrain_step.py <sample pretrain root> <shards dir> <out dir> <processes>

Rank 0 saves the initial weights; every rank saves its batch, its loss and its gradients after DDP's all-reduce.
"""

from __future__ import annotations

import sys

import lightning as L
import torch

from beit3_lightning.data.pretraining_datamodule import PretrainDataModule
from beit3_lightning.tasks.pretraining import PretrainingTask


class Capture(L.Callback):
    def __init__(self, out: str) -> None:
        self.out, self.batch, self.grads = out, None, None

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.global_rank == 0:
            torch.save({k: v.detach().clone() for k, v in pl_module.state_dict().items()}, f"{self.out}/init.pt")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batch = batch

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.grads = {n: p.grad.detach().clone() for n, p in pl_module.named_parameters() if p.grad is not None}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        record = {"batch": self.batch, "grads": self.grads, "loss": outputs["loss"].detach()}
        torch.save(record, f"{self.out}/rank{trainer.global_rank}.pt")


def build(root: str, shards: str) -> tuple[PretrainDataModule, PretrainingTask]:
    data = PretrainDataModule(root=root, tokenizer="sample", visual_tokenizer="sample", img_size=48, batch_size=6,
                              num_workers=0, max_text_len=24, shards=shards)  # fmt: skip
    return data, PretrainingTask(model="tiny", codebook_size=data.codebook_size, drop_path=0.0)


def main() -> None:
    root, shards, out, processes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    L.seed_everything(0)
    data, task = build(root, shards)
    trainer = L.Trainer(
        accelerator="cpu", devices=processes, strategy="ddp" if processes > 1 else "auto", max_steps=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[Capture(out)],
    )  # fmt: skip
    trainer.fit(task, datamodule=data)


if __name__ == "__main__":
    main()
