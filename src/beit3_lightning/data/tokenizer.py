"""BEiT-3 tokenizer: the XLM-R id mapping of ``beit3.spm`` rebuilt on plain sentencepiece.

The official code builds ``transformers.XLMRobertaTokenizer(beit3.spm)``. Its ids are the fairseq layout on top of
the sentencepiece model:

* ``<s>`` = 0, ``<pad>`` = 1, ``</s>`` = 2, ``<unk>`` = 3 (fixed),
* sentencepiece id ``i > 0`` becomes ``i + 1``; sentencepiece id 0 (its ``<unk>``) becomes 3,
* ``<mask>`` = ``len(sp) + 1`` (64001 for ``beit3.spm``) and ``vocab_size`` = ``len(sp) + 2`` (64002).

No lowercasing or other text normalisation happens outside the sentencepiece model itself, as in the reference.
Using sentencepiece directly avoids the transformers 5.x constructor change that silently builds a 5-token
vocabulary from the same file.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

import sentencepiece as spm
import torch

from beit3_lightning.modeling.config import OFFICIAL_VOCAB_SIZE

__all__ = [
    "BEIT3_SPM_URL",
    "BOS_ID",
    "EOS_ID",
    "PAD_ID",
    "UNK_ID",
    "Beit3Tokenizer",
    "TokenizerError",
    "sample_tokenizer_path",
    "text_segment",
    "train_sentencepiece",
]

BOS_ID = 0
PAD_ID = 1
EOS_ID = 2
UNK_ID = 3
# Shift between sentencepiece ids and model ids: fairseq puts its 4 special tokens first, sentencepiece's own
# <unk>/<s>/</s> occupy ids 0..2, so piece i lands on i + 1.
_SPM_OFFSET = 1

BEIT3_SPM_URL = "https://github.com/addf400/files/releases/download/beit3/beit3.spm"
# Ids of beit3.spm: 64000 pieces + <mask> + the XLM-R id shift.
OFFICIAL_TOKENIZER_VOCAB = 64002
SAMPLE_ALIAS = "sample"


class TokenizerError(ValueError):
    """A sentencepiece model file is missing, unreadable or not a sentencepiece model."""


def sample_tokenizer_path() -> Path:
    """Path of the small sentencepiece model shipped with the package (trained on the sample data texts)."""
    return Path(str(resources.files("beit3_lightning") / "assets" / "sample.spm"))


def text_segment(
    token_ids: Sequence[int], max_len: int, bos_id: int = BOS_ID, eos_id: int = EOS_ID, pad_id: int = PAD_ID
) -> tuple[list[int], list[int], int]:
    """Frame pre-tokenized ids the way the reference ``_get_text_segment`` does.

    Returns ``(ids, padding_mask, num_tokens)`` where ids = ``[bos] + token_ids[:max_len - 2] + [eos]`` padded with
    ``pad_id`` to ``max_len``; padding_mask is 0 for real tokens (bos and eos included) and 1 for pads; num_tokens
    counts bos and eos.
    """
    if max_len < 3:
        raise ValueError(f"max_len must be >= 3 to hold <s>, one token and </s>; got {max_len}")
    if len(token_ids) == 0:
        # The reference raises here too: an empty text would give a segment of only <s></s>.
        raise ValueError("text_segment got 0 tokens: the text is empty (check the index file / caption)")
    ids = [bos_id, *list(token_ids)[: max_len - 2], eos_id]
    num_tokens = len(ids)
    padding = max_len - num_tokens
    return ids + [pad_id] * padding, [0] * num_tokens + [1] * padding, num_tokens


def check_encodable(text: str) -> None:
    """ValueError naming the position of a lone surrogate (e.g. ``"\\ud800"``), which has no UTF-8 form.

    Sentencepiece takes UTF-8; without this check pybind11 fails with a RuntimeError that names neither the text
    nor the character. Such strings come from JSON ``\\ud800`` escapes or badly decoded files.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"text has a lone surrogate {text[err.start]!r} at character {err.start} (of {len(text)}): it is not "
            f"valid Unicode text; remove it or fix how the text was decoded (text starts {text[:40]!r})"
        ) from None


def _load_processor(path: Path) -> spm.SentencePieceProcessor:
    """Load a sentencepiece model, turning every failure into a TokenizerError that says what to do."""
    hint = (
        f"BEiT-3 uses the official sentencepiece model beit3.spm ({BEIT3_SPM_URL}); "
        f"pass its path, or 'sample' for the small model shipped for the sample data."
    )
    if not path.is_file():
        raise TokenizerError(f"sentencepiece model not found: {path}. {hint}")
    processor = spm.SentencePieceProcessor()
    try:
        processor.Load(str(path))
    except (OSError, RuntimeError) as err:
        raise TokenizerError(f"cannot read sentencepiece model {path} ({err}). {hint}") from err
    if processor.GetPieceSize() < 4:
        raise TokenizerError(f"sentencepiece model {path} has only {processor.GetPieceSize()} pieces. {hint}")
    return processor


class Beit3Tokenizer:
    """Sentencepiece tokenizer with the ids of ``XLMRobertaTokenizer(beit3.spm)`` (see module docstring).

    Args:
        path: a sentencepiece ``.spm``/``.model`` file, or ``"sample"`` for the model shipped with the package.
    """

    bos_token_id = BOS_ID
    pad_token_id = PAD_ID
    eos_token_id = EOS_ID
    unk_token_id = UNK_ID

    def __init__(self, path: str | os.PathLike[str] = SAMPLE_ALIAS) -> None:
        from beit3_lightning.hub import DownloadError, resolve_file

        try:  # "beit3.spm" not in the working directory → the official file from the download cache
            self.path = sample_tokenizer_path() if str(path) == SAMPLE_ALIAS else resolve_file(path)
        except DownloadError as err:
            raise TokenizerError(str(err)) from None
        self._sp = _load_processor(self.path)

    @classmethod
    def sample(cls) -> Beit3Tokenizer:
        """The small tokenizer shipped in ``assets/sample.spm`` (for the embedded sample data and tests)."""
        return cls(sample_tokenizer_path())

    # ----------------------------------------------------------------- sizes and special ids
    @property
    def mask_token_id(self) -> int:
        """``<mask>`` is appended after the shifted sentencepiece pieces: ``len(sp) + 1``."""
        return self._sp.GetPieceSize() + _SPM_OFFSET

    @property
    def vocab_size(self) -> int:
        """Number of tokenizer ids (``len(sp) + 2``: the 4 fairseq specials, ``len(sp) - 3`` pieces, ``<mask>``)."""
        return self._sp.GetPieceSize() + 2

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids dropped by ``decode(skip_special_tokens=True)``, as transformers' ``all_special_ids``."""
        return frozenset({BOS_ID, PAD_ID, EOS_ID, UNK_ID, self.mask_token_id})

    # ----------------------------------------------------------------- encoding
    def _to_model_id(self, sp_id: int) -> int:
        return sp_id + _SPM_OFFSET if sp_id > 0 else UNK_ID

    def tokenize(self, text: str) -> list[str]:
        """Sentencepiece pieces of ``text`` (e.g. ``['▁a', '▁red', '▁circle']``)."""
        try:
            return list(self._sp.EncodeAsPieces(text))
        except RuntimeError:
            check_encodable(text)  # says which character when that is the cause
            raise

    def encode_ids(self, text: str) -> list[int]:
        """Model ids of ``text`` without special tokens: exactly what the index files store."""
        try:
            sp_ids = self._sp.EncodeAsIds(text)
        except RuntimeError:  # checked only on failure: the index builders encode millions of texts
            check_encodable(text)  # says which character when that is the cause
            raise
        return [self._to_model_id(i) for i in sp_ids]

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        """Pieces to model ids; unknown pieces map to ``<unk>`` (3)."""
        return [self._to_model_id(self._sp.PieceToId(t)) for t in tokens]

    def text_segment(self, token_ids: Sequence[int], max_len: int) -> tuple[list[int], list[int], int]:
        """``[bos] + ids[:max_len-2] + [eos]`` padded to ``max_len``; see the module-level :func:`text_segment`."""
        return text_segment(token_ids, max_len)

    def encode(self, text: str, max_len: int) -> tuple[list[int], list[int], int]:
        """Encode one text into ``(ids, padding_mask, num_tokens)`` of length ``max_len``."""
        return text_segment(self.encode_ids(text), max_len)

    def batch_encode(self, texts: Sequence[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode several texts: returns LongTensors ``ids`` and ``padding_mask`` of shape (B, max_len)."""
        if len(texts) == 0:
            raise ValueError("batch_encode got an empty list of texts")
        segments = [self.encode(text, max_len) for text in texts]
        ids = torch.tensor([s[0] for s in segments], dtype=torch.long)
        padding_mask = torch.tensor([s[1] for s in segments], dtype=torch.long)
        return ids, padding_mask

    # ----------------------------------------------------------------- decoding
    def decode(self, ids: Iterable[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """Turn model ids back into text.

        With ``skip_special_tokens`` (the reference's captioning setting) ``<s>``, ``<pad>``, ``</s>``, ``<unk>`` and
        ``<mask>`` are dropped, like transformers does. Otherwise they are written as their strings. Ids outside
        the tokenizer range (a model vocabulary of 64010 is larger than 64002) count as ``<unk>``.
        """
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        names = {BOS_ID: "<s>", PAD_ID: "<pad>", EOS_ID: "</s>", UNK_ID: "<unk>", self.mask_token_id: "<mask>"}
        parts: list[str] = []
        run: list[int] = []  # consecutive ordinary pieces, decoded together so spaces come out right
        for raw_id in ids:
            model_id = int(raw_id)
            if not 0 <= model_id < self.vocab_size:
                model_id = UNK_ID
            if model_id in names:
                if not skip_special_tokens:
                    parts.extend([self._sp.DecodeIds(run), names[model_id]])
                    run = []
                continue
            run.append(model_id - _SPM_OFFSET)
        parts.append(self._sp.DecodeIds(run))
        return " ".join(p for p in parts if p)

    def batch_decode(
        self, batch: Iterable[Iterable[int]] | torch.Tensor, skip_special_tokens: bool = True
    ) -> list[str]:
        """Decode each row of ``batch`` (a list of id lists or a 2-D tensor)."""
        return [self.decode(ids, skip_special_tokens=skip_special_tokens) for ids in batch]

    # ----------------------------------------------------------------- plumbing
    def __repr__(self) -> str:
        return f"Beit3Tokenizer(path='{self.path}', vocab_size={self.vocab_size})"

    def __getstate__(self) -> dict[str, object]:
        # SentencePieceProcessor pickles poorly across versions; DataLoader workers reload from the path instead.
        return {"path": str(self.path)}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.path = Path(str(state["path"]))
        self._sp = _load_processor(self.path)


def train_sentencepiece(texts: Iterable[str], out_path: str | os.PathLike[str], vocab_size: int = 1000) -> Path:
    """Train a unigram sentencepiece model on ``texts`` and write it to ``out_path``.

    The special-piece layout is sentencepiece's default (``<unk>``=0, ``<s>``=1, ``</s>``=2, no pad piece), the
    same as ``beit3.spm``, so :class:`Beit3Tokenizer` maps it exactly like the official model. Training is
    single-threaded and unshuffled so the same texts give the same file.
    """
    lines = [line.strip() for line in texts]
    lines = [line for line in lines if line]
    if not lines:
        raise ValueError("train_sentencepiece got no non-empty text lines")
    model = io.BytesIO()
    spm.SentencePieceTrainer.Train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        num_threads=1,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        minloglevel=2,
    )
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(model.getvalue())
    return out


def model_vocab_size(tokenizer_vocab: int) -> int:
    """Text-embedding rows for a tokenizer: the official 64002-id tokenizer uses the checkpoints' 64010 rows."""
    return OFFICIAL_VOCAB_SIZE if tokenizer_vocab == OFFICIAL_TOKENIZER_VOCAB else tokenizer_vocab
