"""VQA answer normalisation, vocabulary and soft scores on hand-computed cases."""

from __future__ import annotations

import pytest

from beit3_lightning.data.index.vqa_answers import (
    answer_score,
    build_answer_vocabulary,
    normalize_answer,
    soft_labels,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Two", "2"),  # lowercase + number word
        ("none", "0"),
        ("ten dogs", "10 dogs"),
        ("red.", "red"),  # period not before a digit is removed
        ("2.5", "2.5"),  # period before a digit stays
        ("10.5 cm.", "10.5 cm"),
        ("yes/no", "yes no"),  # '/' touching no space becomes a space
        ("left - right", "left right"),  # ' -' touches a space: deleted
        ("1,000", "1000"),  # digit,digit: every punctuation mark is deleted
        ("the dog, the cat", "dog cat"),  # ', ' deleted, articles dropped
        ("a (big) dog", "big dog"),
        ("An orange!", "orange"),
        ("What?", "what"),
        ("dont know", "don't know"),  # contraction restored
        ("shouldnt've", "shouldn't've"),
        ("well", "well"),  # an ordinary word is not a contraction
        ("  many   spaces ", "many spaces"),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_answer_vocabulary_threshold_and_first_appearance_order() -> None:
    answers = ["no", "Yes", "yes", "two", "2", "no", "red", "yes.", "2"]
    # normalised: no yes yes 2 2 no red yes 2 -> counts no 2, yes 3, 2 3, red 1; order of first appearance
    assert build_answer_vocabulary(answers, min_count=2) == {"no": 0, "yes": 1, "2": 2}
    assert build_answer_vocabulary(answers, min_count=3) == {"yes": 0, "2": 1}
    assert build_answer_vocabulary(answers, min_count=1) == {"no": 0, "yes": 1, "2": 2, "red": 3}
    with pytest.raises(ValueError, match="min_count"):
        build_answer_vocabulary(answers, min_count=0)


@pytest.mark.parametrize(("count", "score"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_answer_score(count: int, score: float) -> None:
    assert answer_score(count) == score


def test_soft_labels_count_raw_answers_and_skip_unknown() -> None:
    vocabulary = {"red": 0, "blue": 1, "2": 2}
    raw = ["red"] * 5 + ["blue", "blue", "Red", "green", "red."]
    # "Red" and "red." are not vocabulary entries as written (raw strings are counted, as in the reference).
    assert soft_labels(raw, vocabulary) == ([0, 1], [1.0, 0.6])
    assert soft_labels(["two", "2", "2", "2"], vocabulary) == ([2], [0.9])
    assert soft_labels(["green"] * 10, vocabulary) == ([], [])
