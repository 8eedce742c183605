"""Captioning scores written from the coco-caption definitions: CIDEr-D and corpus BLEU.

The reference scores with pycocoevalcap (``COCOEvalCap``), whose PTB tokenizer needs Java. Here a small pure-Python
tokenizer (:func:`simple_tokenize`) approximates it; it matched PTB on common caption text (clitics, hyphens,
quotes, brackets) but may differ on rare symbols. Pass your own ``tokenize`` for exact parity. Given the same
tokens, the scores equal pycocoevalcap's ``Cider``/``Bleu(4)`` (checked on random corpora).

Scores are fractions like coco-caption's (CIDEr 1.434, BLEU-4 0.42), not percentages.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

Tokenizer = Callable[[str], list[str]]
NGram = tuple[str, ...]

# PTB splits clitics off the word before them ("isn't" -> "is n't", "dog's" -> "dog 's").
_CLITIC = re.compile(r"(\w)(n't|'s|'re|'ll|'ve|'m|'d)\b")
_CLITICS = frozenset({"n't", "'s", "'re", "'ll", "'ve", "'m", "'d"})
# PTB turns brackets into -lrb- etc.; coco-caption's filter lists them upper-case, so after lower-casing they stay.
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
# Punctuation that PTB separates from word edges and coco-caption then drops ("t-shirt", "3.5" stay whole).
_EDGE_PUNCTUATION = "\"'`.,!?;:-"
# ... and between words ("park,with"); commas inside numbers ("10,000") stay.
_INNER_PUNCTUATION = re.compile(r"[;!?]|(?<!\d),|,(?!\d)")


def simple_tokenize(text: str) -> list[str]:
    """Pure-Python approximation of coco-caption's PTB tokenisation + punctuation removal.

    Lower-cases, splits clitics ("don't" -> "do n't", "dog's" -> "dog 's"), maps brackets to -lrb-/-rrb- tokens
    (kept, as coco-caption keeps them), drops punctuation at word edges and between words, and drops tokens
    left empty. ``"t-shirt"``, ``"3.5"`` and ``"10,000"`` stay whole as in PTB.
    """
    text = text.lower()
    for bracket, token in _BRACKETS.items():
        text = text.replace(bracket, f" {token} ")
    text = _INNER_PUNCTUATION.sub(" ", text)
    tokens = []
    for raw in _CLITIC.sub(r"\1 \2", text).split():
        token = raw if raw in _CLITICS or raw in _BRACKETS.values() else raw.strip(_EDGE_PUNCTUATION)
        if token:
            tokens.append(token)
    return tokens


def ngram_counts(tokens: Sequence[str], max_n: int = 4) -> Counter[NGram]:
    """Counts of every n-gram of ``tokens`` for n = 1..max_n."""
    return Counter(tuple(tokens[i : i + n]) for n in range(1, max_n + 1) for i in range(len(tokens) - n + 1))


def _check_and_tokenize(
    predictions: Mapping[int, str], references: Mapping[int, Sequence[str]], tokenize: Tokenizer
) -> tuple[list[int], dict[int, list[str]], dict[int, list[list[str]]]]:
    """Tokenise predictions and the references of the predicted ids; every predicted id needs references."""
    ids = list(predictions)
    if not ids:
        raise ValueError("no predictions to score")
    missing = [i for i in ids if not references.get(i)]
    if missing:
        raise ValueError(
            f"{len(missing)} predicted image ids have no reference captions, e.g. {missing[0]!r}; "
            "check that the references belong to the evaluated split"
        )
    hyps = {i: tokenize(predictions[i]) for i in ids}
    refs = {i: [tokenize(ref) for ref in references[i]] for i in ids}
    return ids, hyps, refs


def cider_d_scores(
    predictions: Mapping[int, str],
    references: Mapping[int, Sequence[str]],
    max_n: int = 4,
    sigma: float = 6.0,
    tokenize: Tokenizer = simple_tokenize,
) -> dict[int, float]:
    """Per-image CIDEr-D as in coco-caption's ``CiderScorer`` (pycocoevalcap "CIDEr").

    For n = 1..4: tf-idf vectors g(x) = tf · (log |images| − log max(1, df)), df = number of images whose
    references contain the n-gram (only the scored images count); similarity to each reference r =
    Σ min(g_hyp, g_ref)·g_ref / (‖g_hyp‖‖g_ref‖) (clipping) × exp(−δ²/2σ²). Score = 10 × mean over n and over the
    references. Like the original, the length difference δ counts *bigrams* (word count − 1 for ≥ 1 word).
    """
    ids, hyps, refs = _check_and_tokenize(predictions, references, tokenize)
    document_frequency: Counter[NGram] = Counter()
    for image_id in ids:
        document_frequency.update({gram for ref in refs[image_id] for gram in ngram_counts(ref, max_n)})
    log_num_images = math.log(float(len(ids)))

    def tfidf(tokens: list[str]) -> tuple[list[dict[NGram, float]], list[float], int]:
        vectors: list[dict[NGram, float]] = [{} for _ in range(max_n)]
        for gram, count in ngram_counts(tokens, max_n).items():
            vectors[len(gram) - 1][gram] = count * (log_num_images - math.log(max(1.0, document_frequency[gram])))
        norms = [math.sqrt(sum(v * v for v in vec.values())) for vec in vectors]
        num_bigrams = max(len(tokens) - 1, 0)
        return vectors, norms, num_bigrams

    scores = {}
    for image_id in ids:
        hyp_vecs, hyp_norms, hyp_len = tfidf(hyps[image_id])
        total = 0.0
        for ref in refs[image_id]:
            ref_vecs, ref_norms, ref_len = tfidf(ref)
            penalty = math.exp(-((hyp_len - ref_len) ** 2) / (2 * sigma**2))
            for n in range(max_n):
                overlap = sum(
                    min(w, ref_vecs[n][g]) * ref_vecs[n][g] for g, w in hyp_vecs[n].items() if g in ref_vecs[n]
                )
                if hyp_norms[n] != 0 and ref_norms[n] != 0:
                    overlap /= hyp_norms[n] * ref_norms[n]
                total += overlap * penalty
        scores[image_id] = total / max_n / len(refs[image_id]) * 10.0
    return scores


def cider_d(
    predictions: Mapping[int, str],
    references: Mapping[int, Sequence[str]],
    tokenize: Tokenizer = simple_tokenize,
) -> float:
    """Corpus CIDEr-D: the mean of :func:`cider_d_scores` over the predicted images."""
    scores = cider_d_scores(predictions, references, tokenize=tokenize)
    return sum(scores.values()) / len(scores)


def bleu_scores(
    predictions: Mapping[int, str],
    references: Mapping[int, Sequence[str]],
    n: int = 4,
    tokenize: Tokenizer = simple_tokenize,
) -> list[float]:
    """Corpus BLEU-1..n as coco-caption's ``BleuScorer(option="closest")``.

    Clipped n-gram matches (against the maximum count in any one reference) and candidate n-gram counts are summed
    over the corpus; BLEU-k = (Π_{m≤k} p_m)^(1/k) with p_m = (matches + 1e-15)/(candidates + 1e-9), times the
    brevity penalty exp(1 − r/c) when c < r, where c is the total hypothesis length and r sums, per image, the
    reference length closest to the hypothesis length (the shorter one on ties).
    """
    ids, hyps, refs = _check_and_tokenize(predictions, references, tokenize)
    matches, candidates = [0] * n, [0] * n
    hyp_length, ref_length = 0, 0
    for image_id in ids:
        hyp = hyps[image_id]
        max_ref_counts: Counter[NGram] = Counter()
        for ref in refs[image_id]:
            max_ref_counts |= ngram_counts(ref, n)  # Counter union keeps the maximum count
        for gram, count in ngram_counts(hyp, n).items():
            matches[len(gram) - 1] += min(count, max_ref_counts[gram])
        for m in range(n):
            candidates[m] += max(0, len(hyp) - m)
        hyp_length += len(hyp)
        ref_length += min((abs(len(ref) - len(hyp)), len(ref)) for ref in refs[image_id])[1]
    tiny, small = 1e-15, 1e-9  # coco-caption's smoothing constants
    scores, product = [], 1.0
    for m in range(n):
        product *= (matches[m] + tiny) / (candidates[m] + small)
        scores.append(product ** (1.0 / (m + 1)))
    ratio = (hyp_length + tiny) / (ref_length + small)
    if ratio < 1:
        scores = [score * math.exp(1 - 1 / ratio) for score in scores]
    return scores


def bleu(
    predictions: Mapping[int, str],
    references: Mapping[int, Sequence[str]],
    n: int = 4,
    tokenize: Tokenizer = simple_tokenize,
) -> float:
    """Corpus BLEU-n (default BLEU-4), see :func:`bleu_scores`."""
    return bleu_scores(predictions, references, n, tokenize)[-1]


References = Mapping[int, Sequence[str]]


class CaptionMetric(Metric):
    """Collects (image_id, caption) pairs on every process; computes {"CIDEr", "BLEU-4"} over all of them.

    Captions travel between processes as UTF-8 bytes in tensor states. Duplicate image ids (DistributedSampler
    padding, or several captions per image in the eval set) keep the first caption. After ``compute`` the
    gathered predictions are available as ``last_predictions`` (for writing a submission file).

    Args:
        references: {image_id: [reference captions]}, or a zero-argument callable returning it (called at
            compute, so a DataModule can load them lazily); may also be set later with :meth:`set_references`.
        tokenize: tokenizer applied to predictions and references (default :func:`simple_tokenize`).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(
        self,
        references: References | Callable[[], References] | None = None,
        tokenize: Tokenizer = simple_tokenize,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.references = references
        self.tokenize = tokenize
        self.last_predictions: dict[int, str] = {}
        self.add_state("image_ids", default=[], dist_reduce_fx="cat")
        self.add_state("caption_bytes", default=[], dist_reduce_fx="cat")
        self.add_state("caption_lengths", default=[], dist_reduce_fx="cat")

    def set_references(self, references: References | Callable[[], References]) -> None:
        """Set or replace the reference captions (or a callable producing them)."""
        self.references = references

    def update(self, image_ids: Tensor | Sequence[int], captions: Sequence[str]) -> None:
        """Add generated captions and the integer ids of their images."""
        ids = torch.as_tensor(image_ids, dtype=torch.long, device=self.device).view(-1)
        if ids.shape[0] != len(captions):
            raise ValueError(f"{ids.shape[0]} image ids for {len(captions)} captions")
        encoded = [caption.encode("utf-8") for caption in captions]
        self.image_ids.append(ids)
        self.caption_bytes.append(torch.tensor(list(b"".join(encoded)), dtype=torch.uint8, device=self.device))
        self.caption_lengths.append(torch.tensor([len(e) for e in encoded], dtype=torch.long, device=self.device))

    def gathered_predictions(self) -> dict[int, str]:
        """{image_id: caption} from the (already synchronised) states, first occurrence per id."""
        if isinstance(self.image_ids, list) and not self.image_ids:  # states are lists before a DDP sync
            return {}
        ids = dim_zero_cat(self.image_ids).tolist()
        lengths = dim_zero_cat(self.caption_lengths).tolist()
        data = bytes(dim_zero_cat(self.caption_bytes).cpu().tolist())
        predictions: dict[int, str] = {}
        offset = 0
        for image_id, length in zip(ids, lengths):
            predictions.setdefault(image_id, data[offset : offset + length].decode("utf-8"))
            offset += length
        return predictions

    def compute(self) -> dict[str, Tensor]:
        """{"CIDEr": …, "BLEU-4": …} as 0-dim tensors (fractions)."""
        if self.references is None:
            raise ValueError("CaptionMetric has no references: pass them at init or call set_references()")
        references = self.references() if callable(self.references) else self.references
        self.last_predictions = self.gathered_predictions()
        return {
            "CIDEr": torch.tensor(cider_d(self.last_predictions, references, self.tokenize)),
            "BLEU-4": torch.tensor(bleu(self.last_predictions, references, 4, self.tokenize)),
        }
