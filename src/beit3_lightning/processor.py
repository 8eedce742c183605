"""``Beit3Processor``: raw images and strings → the batch tensors the BEiT-3 models take.

It applies the same evaluation transform and text framing as the datasets, so a batch built here equals the one a
DataModule's val/test loader builds for the same image and text:

* images: ImageNet → shorter side to ``int(S / crop_pct)``, centre crop, ImageNet mean/std; every other task →
  squash resize to S × S, mean = std = 0.5 (unilm ``datasets.build_transform``; docs/reference.md#image-transforms);
* text: ``<s> tokens </s>`` padded with ``<pad>`` to ``max_text_len``, ``padding_mask`` 1 on pads (unilm
  ``BaseDataset._get_text_segment``; docs/reference.md#text-framing).

The task names accepted here (and by :func:`beit3_lightning.inference.load_model`) are the dataset names of the
task table (:mod:`beit3_lightning.task_table`) and their aliases.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from beit3_lightning.data.images import to_rgb_image
from beit3_lightning.data.tokenizer import Beit3Tokenizer
from beit3_lightning.data.transforms import ImageTransform, build_transform
from beit3_lightning.task_table import ALIASES, DATASETS, resolve_dataset

__all__ = ["TASKS", "TASK_ALIASES", "Beit3Processor", "ImageInput", "TextInput", "open_image", "resolve_task"]

# The dataset names of the official fine-tuning tasks (``--task``), and the short names users type for them.
TASKS: tuple[str, ...] = tuple(DATASETS)
TASK_ALIASES: dict[str, str] = ALIASES
# A dataset name or alias → the dataset name (``"captioning"`` → ``"coco_captioning"``); ValueError otherwise.
resolve_task = resolve_dataset

# One image: a PIL image (16-bit and float ones are scaled to 8 bits), an HWC (or HW) uint8 array (uint16 is
# scaled too), a CHW torch tensor (uint8 0..255 or float 0..1; a BCHW tensor is a batch), or a path to an image file.
SingleImage = Image.Image | np.ndarray | torch.Tensor | str | os.PathLike
ImageInput = SingleImage | Sequence[SingleImage]
TextInput = str | Sequence[str]

_ACCEPTED_IMAGES = (
    "a PIL image, an HxWx3 uint8 numpy array, a 3xHxW torch tensor (uint8, or float in [0, 1]), a path to an "
    "image file, or a list of these"
)
_ACCEPTED_TEXT = "a string or a list of strings"


def _is_single_image(item: object) -> bool:
    return isinstance(item, (Image.Image, np.ndarray, str, os.PathLike)) or (
        isinstance(item, torch.Tensor) and item.dim() == 3
    )


def tensor_to_array(image: torch.Tensor) -> np.ndarray:
    """A CHW tensor (uint8 0..255, or float 0..1 as torchvision's ``to_tensor`` gives) → HWC uint8 array."""
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"an image tensor must be 3xHxW (or 1xHxW), got shape {tuple(image.shape)}")
    image = image.detach().cpu()
    if image.dtype == torch.uint8:
        pixels = image
    elif image.is_floating_point():
        low, high = float(image.min()), float(image.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"a float image tensor must hold values in [0, 1], got [{low:.3g}, {high:.3g}] (an already "
                "normalised tensor? pass the unnormalised image)"
            )
        pixels = (image * 255.0).round().to(torch.uint8)
    else:
        raise ValueError(f"an image tensor must be uint8 or float, got {image.dtype}")
    return pixels.expand(3, -1, -1).permute(1, 2, 0).numpy()


def open_image(path: str | os.PathLike) -> Image.Image:
    """Read an image file as 8-bit RGB (16-bit and float images scaled, not clipped), with errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            return to_rgb_image(image)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


class Beit3Processor:
    """Turns images and texts into model inputs (``image``, ``language_tokens``, ``padding_mask``).

    Args:
        tokenizer: required, so that a model is never fed ids of a tokenizer it was not trained with: a
            sentencepiece model path (the official ``beit3.spm``), ``"sample"`` for the model shipped with the
            package (the sample models), a :class:`Beit3Tokenizer`, or ``None`` for image-only use (ImageNet,
            segmentation).
        img_size: input resolution S of the model (224 / 384 / 480 / 768 for the official checkpoints).
        task: decides the image normalisation (see the module docstring); any name :func:`resolve_task` accepts.
        max_text_len: text length in tokens including ``<s>`` and ``</s>``; longer texts are truncated (warning).
        interpolation: resize filter (``bicubic`` as the reference).
        crop_pct: ImageNet only: the shorter side is resized to ``int(img_size / crop_pct)`` before the centre crop.

    Example::

        processor = Beit3Processor("beit3.spm", img_size=480, task="vqav2")
        batch = processor(images=[Image.open("cat.jpg")], text=["what is on the sofa?"])
        batch["image"].shape  # (1, 3, 480, 480)
    """

    def __init__(
        self,
        tokenizer: str | os.PathLike | Beit3Tokenizer | None,
        img_size: int = 224,
        task: str = "vqav2",
        max_text_len: int = 64,
        interpolation: str = "bicubic",
        crop_pct: float = 1.0,
    ) -> None:
        if max_text_len < 3:
            raise ValueError(f"max_text_len must be >= 3 (<s>, one token, </s>), got {max_text_len}")
        self.task = resolve_task(task)
        if tokenizer is None or isinstance(tokenizer, Beit3Tokenizer):
            self.tokenizer = tokenizer
        else:
            self.tokenizer = Beit3Tokenizer(tokenizer)
        self.img_size = img_size
        self.max_text_len = max_text_len
        self.interpolation = interpolation  # kept so that an export can rebuild the same processor
        self.crop_pct = crop_pct
        self.transform: ImageTransform = build_transform(
            self.task, is_train=False, img_size=img_size, interpolation=interpolation, crop_pct=crop_pct
        )

    def __repr__(self) -> str:
        return (
            f"Beit3Processor(task={self.task!r}, img_size={self.img_size}, max_text_len={self.max_text_len}, "
            f"tokenizer={self.tokenizer!r})"
        )

    # ----- the whole batch ----------------------------------------------------------------------------------------
    def __call__(
        self, images: ImageInput | None = None, text: TextInput | None = None, images2: ImageInput | None = None
    ) -> dict[str, torch.Tensor]:
        """Batch tensors: ``image`` (B, 3, S, S), ``image2`` (NLVR2's second image) and ``language_tokens`` /
        ``padding_mask`` (B, max_text_len), for whichever inputs are given."""
        if images is None and text is None:
            raise ValueError("Beit3Processor needs images=..., text=... or both")
        batch: dict[str, torch.Tensor] = {}
        if images is not None:
            batch["image"] = self.preprocess_images(images)
        if images2 is not None:
            batch["image2"] = self.preprocess_images(images2)
            if "image" in batch and len(batch["image"]) != len(batch["image2"]):
                raise ValueError(
                    f"images and images2 must pair up one to one: got {len(batch['image'])} and {len(batch['image2'])}"
                )
        if text is not None:
            batch["language_tokens"], batch["padding_mask"] = self.tokenize(text)
        return batch

    # ----- images -------------------------------------------------------------------------------------------------
    @staticmethod
    def image_list(images: ImageInput) -> list[SingleImage]:
        """``images`` as a list of single images (not yet opened); TypeError for anything else."""
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            images = list(images)  # a batch (B, 3, H, W)
        items = [images] if _is_single_image(images) else images
        if not isinstance(items, (list, tuple)):
            raise TypeError(f"images must be {_ACCEPTED_IMAGES}; got {type(images).__name__}")
        if not items:
            raise ValueError("got an empty list of images")
        for position, item in enumerate(items):
            if not _is_single_image(item):
                raise TypeError(f"image {position} is a {type(item).__name__}; images must be {_ACCEPTED_IMAGES}")
        return [tensor_to_array(item) if isinstance(item, torch.Tensor) else item for item in items]

    def preprocess_image(self, image: SingleImage) -> torch.Tensor:
        """One image → normalised tensor (3, S, S)."""
        if isinstance(image, (str, os.PathLike)):
            image = open_image(image)
        try:
            return self.transform(image)
        except ValueError as err:  # e.g. a float or 4-channel array
            raise ValueError(f"{err}. Images must be {_ACCEPTED_IMAGES}.") from err

    def preprocess_images(self, images: ImageInput) -> torch.Tensor:
        """Images → normalised batch (B, 3, S, S)."""
        tensors = []
        for position, image in enumerate(self.image_list(images)):
            try:
                tensors.append(self.preprocess_image(image))
            except ValueError as err:
                raise ValueError(f"image {position}: {err}") from err
        return torch.stack(tensors)

    # ----- text ---------------------------------------------------------------------------------------------------
    @staticmethod
    def text_list(text: TextInput) -> list[str]:
        """``text`` as a list of strings; TypeError for anything else."""
        items = [text] if isinstance(text, str) else text
        if not isinstance(items, (list, tuple)):
            raise TypeError(f"text must be {_ACCEPTED_TEXT}; got {type(text).__name__}")
        if not items:
            raise ValueError("got an empty list of texts")
        for position, item in enumerate(items):
            if not isinstance(item, str):
                raise TypeError(f"text {position} is a {type(item).__name__}; text must be {_ACCEPTED_TEXT}")
        return list(items)

    def require_tokenizer(self) -> Beit3Tokenizer:
        """The tokenizer; a ValueError that says what to pass when there is none."""
        if self.tokenizer is None:
            raise ValueError(
                "this processor has no tokenizer: pass tokenizer='path/to/beit3.spm' (or 'sample' for the sample "
                "models) to use text"
            )
        return self.tokenizer

    def tokenize(self, text: TextInput) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts → ``language_tokens`` and ``padding_mask`` (B, max_text_len), long; warns about truncation."""
        tokenizer = self.require_tokenizer()
        texts = self.text_list(text)
        room = self.max_text_len - 2  # <s> and </s> take two positions
        ids, masks, truncated = [], [], []
        for position, item in enumerate(texts):
            try:
                pieces = tokenizer.encode_ids(item)
            except ValueError as err:  # a lone surrogate: say which text of the batch
                raise ValueError(f"text {position}: {err}") from err
            if not pieces:
                raise ValueError(f"text {position} ({item!r}) has no tokens; pass a non-empty text")
            if len(pieces) > room:
                truncated.append((position, len(pieces)))
            segment, padding, _ = tokenizer.text_segment(pieces, self.max_text_len)
            ids.append(segment)
            masks.append(padding)
        if truncated:
            position, length = truncated[0]
            warnings.warn(
                f"{len(truncated)} text(s) longer than max_text_len={self.max_text_len} tokens were truncated to "
                f"{room} tokens + <s> + </s> (e.g. text {position}: {length} tokens). Raise max_text_len if the "
                "model was trained with longer texts.",
                UserWarning,
                stacklevel=2,
            )
        return torch.tensor(ids, dtype=torch.long), torch.tensor(masks, dtype=torch.long)

    def decode(self, ids: Sequence[Sequence[int]] | torch.Tensor) -> list[str]:
        """Token ids (one list per text) → strings, special tokens dropped."""
        return self.require_tokenizer().batch_decode(ids)
