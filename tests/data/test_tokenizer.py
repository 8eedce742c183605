"""Beit3Tokenizer: XLM-R id mapping on sentencepiece, text segments, decoding, errors and pickling."""

from __future__ import annotations

import pickle

import pytest
import sentencepiece as spm
import torch

from beit3_lightning.data.tokenizer import (
    BEIT3_SPM_URL,
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    Beit3Tokenizer,
    TokenizerError,
    sample_tokenizer_path,
    text_segment,
    train_sentencepiece,
)


@pytest.fixture(scope="module")
def tok() -> Beit3Tokenizer:
    return Beit3Tokenizer.sample()


def test_special_ids_are_the_xlmr_ones(tok: Beit3Tokenizer) -> None:
    assert (BOS_ID, PAD_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    # sample.spm has 1000 sentencepiece pieces: mask = len(sp) + 1, vocab = len(sp) + 2.
    assert tok.mask_token_id == 1001
    assert tok.vocab_size == 1002
    assert len(tok) == 1002


def test_piece_ids_are_shifted_by_one(tok: Beit3Tokenizer) -> None:
    sp = spm.SentencePieceProcessor()
    sp.Load(str(sample_tokenizer_path()))
    # In sample.spm: '▁how' = 12, '▁many' = 13, '▁the' = 3 (checked once by hand with IdToPiece).
    assert sp.EncodeAsIds("how many") == [12, 13]
    assert tok.encode_ids("how many") == [13, 14]
    assert tok.encode_ids("the") == [4]
    assert tok.tokenize("how many") == ["▁how", "▁many"]
    assert tok.convert_tokens_to_ids(["▁how", "▁many", "no-such-piece"]) == [13, 14, UNK_ID]


def test_unknown_characters_map_to_unk(tok: Beit3Tokenizer) -> None:
    ids = tok.encode_ids("wö")  # 'ö' never occurs in the training text: sentencepiece id 0 -> 3
    assert UNK_ID in ids
    assert 0 not in ids and 1 not in ids and 2 not in ids


def test_no_lowercasing(tok: Beit3Tokenizer) -> None:
    assert tok.encode_ids("The") != tok.encode_ids("the")


def test_text_segment_pads_and_masks() -> None:
    ids, mask, n = text_segment([10, 11, 12], max_len=7)
    assert ids == [0, 10, 11, 12, 2, 1, 1]
    assert mask == [0, 0, 0, 0, 0, 1, 1]
    assert n == 5


def test_text_segment_truncates_to_max_len_minus_two() -> None:
    ids, mask, n = text_segment(list(range(10, 20)), max_len=5)
    assert ids == [0, 10, 11, 12, 2]
    assert mask == [0, 0, 0, 0, 0]
    assert n == 5


def test_text_segment_rejects_empty_and_tiny_max_len(tok: Beit3Tokenizer) -> None:
    with pytest.raises(ValueError, match="0 tokens"):
        text_segment([], max_len=8)
    with pytest.raises(ValueError, match="0 tokens"):
        tok.encode("", max_len=8)
    with pytest.raises(ValueError, match="max_len"):
        text_segment([5], max_len=2)


def test_encode_and_batch_encode(tok: Beit3Tokenizer) -> None:
    ids, mask, n = tok.encode("how many", max_len=6)
    assert ids == [0, 13, 14, 2, 1, 1] and mask == [0, 0, 0, 0, 1, 1] and n == 4
    batch_ids, batch_mask = tok.batch_encode(["how many", "the"], max_len=6)
    assert batch_ids.dtype == torch.long and batch_mask.dtype == torch.long
    assert batch_ids.shape == (2, 6) and batch_mask.shape == (2, 6)
    assert batch_ids[1].tolist() == [0, 4, 2, 1, 1, 1]
    assert batch_mask[1].tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError):
        tok.batch_encode([], max_len=6)


def test_decode_round_trip_and_specials(tok: Beit3Tokenizer) -> None:
    text = "A red circle in the top left corner."
    ids, _, _ = tok.encode(text, max_len=32)
    assert tok.decode(ids) == text
    assert tok.decode(torch.tensor(ids)) == text
    with_mask = [0, 13, tok.mask_token_id, 14, 2, 1]
    assert tok.decode(with_mask) == "how many"
    assert tok.decode(with_mask, skip_special_tokens=False) == "<s> how <mask> many </s> <pad>"
    # Ids past the tokenizer range (the model vocabulary is larger) count as <unk> and are skipped.
    assert tok.decode([13, 5000, 14]) == "how many"
    assert tok.batch_decode(torch.tensor([[0, 13, 2], [0, 4, 2]])) == ["how", "the"]


def test_missing_file_raises_tokenizer_error(tmp_path) -> None:
    missing = tmp_path / "beit3.spm"
    with pytest.raises(TokenizerError) as info:
        Beit3Tokenizer(missing)
    assert str(missing) in str(info.value)
    assert BEIT3_SPM_URL in str(info.value)
    assert isinstance(info.value, ValueError)


def test_corrupt_file_raises_tokenizer_error(tmp_path) -> None:
    corrupt = tmp_path / "broken.spm"
    corrupt.write_bytes(b"this is not a sentencepiece model" * 10)
    with pytest.raises(TokenizerError, match="broken.spm"):
        Beit3Tokenizer(corrupt)


def test_sample_alias_and_repr(tok: Beit3Tokenizer) -> None:
    alias = Beit3Tokenizer("sample")
    assert alias.path == sample_tokenizer_path() == tok.path
    assert sample_tokenizer_path().stat().st_size < 1_000_000
    assert "vocab_size=1002" in repr(alias)


def test_pickle_round_trip(tok: Beit3Tokenizer) -> None:
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.path == tok.path
    assert clone.encode_ids("how many squares?") == tok.encode_ids("how many squares?")


def test_train_sentencepiece_gives_xlmr_compatible_layout(tmp_path) -> None:
    texts = [f"the {c} {s} is {p}" for c in ("red", "blue") for s in ("box", "ball") for p in ("up", "down")] * 20
    path = train_sentencepiece(texts, tmp_path / "tiny.spm", vocab_size=20)
    tiny = Beit3Tokenizer(path)
    assert tiny.vocab_size == 22 and tiny.mask_token_id == 21
    sp = spm.SentencePieceProcessor()
    sp.Load(str(path))
    assert [sp.IdToPiece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert tiny.decode(tiny.encode_ids("the red ball is up")) == "the red ball is up"
    with pytest.raises(ValueError, match="no non-empty"):
        train_sentencepiece(["", "  "], tmp_path / "empty.spm")
