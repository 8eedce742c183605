"""VQA answer normalisation, answer vocabulary and soft scores (the VQA-eval rules used by ViLT/BEiT-3).

``normalize_answer`` applies, in order:

1. punctuation: each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted when it touches a space in the
   text or when the text has a digit-comma-digit group ("1,000"), otherwise it becomes a space ("yes/no" -> "yes no");
2. periods are deleted unless a digit follows ("2.5" keeps its period, "red." loses it);
3. lowercase and split on whitespace; number words none/zero..ten become "0".."10"; articles a/an/the are dropped;
4. apostrophe-less contractions are restored ("dont" -> "don't"); remaining commas are removed.

Two reference quirks are kept on purpose: the punctuation test looks at the *original* text, and the period rule is
a lookahead only (the official regex meant a look-behind too but is written so it never applies).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")

# Canonical contractions; the lookup table maps every spelling with some apostrophes left out to them.
_CANONICAL_CONTRACTIONS = (  # noqa: SIM905 (one readable block instead of 110 list lines)
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't "
    "haven't he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll let's ma'am mightn't "
    "mightn't've might've mustn't must've needn't not've o'clock oughtn't shan't she'd she'd've she's "
    "should've shouldn't shouldn't've somebody'd somebody'd've somebody'll somebody's someone'd "
    "someone'd've someone'll someone's something'd something'd've something'll that's there'd there'd've "
    "there're there's they'd they'd've they'll they're they've 'twas wasn't we'd we'd've we've weren't "
    "what'll what're what's what've when's where'd where's where've who'd who'd've who'll who's who've "
    "why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll you'd you'd've you'll you're "
    "you've"
).split()
# Apostrophe-less spellings that are ordinary words stay as they are (as in the VQA evaluation table).
_REAL_WORDS = frozenset({"ill", "its", "well", "were", "shell", "hell", "whore", "id"})


def _contraction_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for canonical in _CANONICAL_CONTRACTIONS:
        parts = canonical.split("'")
        # Every way to drop a non-empty subset of the apostrophes (bit i set = apostrophe i dropped).
        for mask in range(1, 2 ** (len(parts) - 1)):
            spelled = parts[0]
            for i, part in enumerate(parts[1:]):
                spelled += ("" if mask >> i & 1 else "'") + part
            if spelled not in _REAL_WORDS:
                table[spelled] = canonical
    return table


CONTRACTIONS = _contraction_table()


def _strip_punctuation(text: str) -> str:
    out = text
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    for mark in PUNCTUATION:
        # Decided on the original text, not on ``out`` (reference behaviour).
        if delete_all or f"{mark} " in text or f" {mark}" in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out)


def normalize_answer(answer: str) -> str:
    """Normalise a VQA answer string (see the module docstring for the exact rules)."""
    words = [NUMBER_WORDS.get(word, word) for word in _strip_punctuation(answer).lower().split()]
    words = [CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES]
    return " ".join(words).replace(",", "")


def build_answer_vocabulary(answers: Iterable[str], min_count: int = 9) -> dict[str, int]:
    """Answer -> label for normalised answers seen at least ``min_count`` times, labels in first-appearance order."""
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    counts = Counter(normalize_answer(a) for a in answers)
    kept = [answer for answer, count in counts.items() if count >= min_count]
    return {answer: label for label, answer in enumerate(kept)}


def answer_score(count: int) -> float:
    """Soft score of an answer given by ``count`` of the 10 annotators: 0, 0.3, 0.6, 0.9, then 1.0 from 4 on."""
    return (0.0, 0.3, 0.6, 0.9)[count] if count < 4 else 1.0


def soft_labels(raw_answers: Iterable[str], answer2label: dict[str, int]) -> tuple[list[int], list[float]]:
    """Labels and scores of one question from its *raw* human answers (not normalised, as the reference does).

    Answers outside the vocabulary are skipped; labels follow the first appearance of each answer.
    """
    counts = Counter(raw_answers)
    labels, scores = [], []
    for answer, count in counts.items():
        if answer in answer2label:
            labels.append(answer2label[answer])
            scores.append(answer_score(count))
    return labels, scores
