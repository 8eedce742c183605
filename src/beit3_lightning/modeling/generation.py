"""Caption generation for ``Beit3ForCaptioning``: the reference beam search and a greedy decoder.

Decoding protocol (unilm ``CaptioningHandler.eval_batch``): the text is ``[CLS] w1 … wk [MASK]`` and the model
predicts the next word at the ``[MASK]``. Step 1 runs the image with ``[CLS, MASK]``; each later step runs only
``[last word, MASK]`` against the cached keys/values (``use_cache=True``), and the ``[MASK]``'s own key/value is
dropped from the cache afterwards because the next step places a real word there. ``use_cache=False`` recomputes the
whole image + text every step (same results, for checks and benchmarks).

Beam search follows the reference exactly: top-(3 × beams) candidates over beams × vocabulary, a hypothesis closes
on ``</s>`` or when ``cur_len + 1 == max_len`` and is scored ``sum_logprobs / len ** length_penalty`` where ``len``
counts ``[CLS]``, the words and the trailing ``[MASK]`` (words + 2); an image is done once its kept hypothesis
beats the best open score divided by ``(max_len - 1) ** length_penalty``. So at most ``max_len - 3`` words come
out. Model calls are batched over images × beams. Differences that cannot change any result: step 1 runs once per
image instead of once per beam (all beams are identical there), images that are done leave the batch, the
reference's extra model call at ``cur_len == max_len`` (which can add no hypothesis) is skipped, and the
log-softmax is taken in fp32 (the reference uses the model dtype).

Note: with the reference's length penalty, ``num_beams=1`` is *not* plain greedy: after an ``</s>`` it keeps the
runner-up word alive and may return a longer hypothesis with a better normalised score. With
``length_penalty=0`` it equals ``greedy_decode``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from beit3_lightning.modeling.backbone import IncrementalState
from beit3_lightning.modeling.heads.captioning import Beit3ForCaptioning

# Candidates kept per beam before filling the next beams (reference TOPN_PER_BEAM).
TOPN_PER_BEAM = 3
# Score of beams 2..K at step 1, so that the first step expands beam 1 only (all beams start identical).
INACTIVE_BEAM_SCORE = -1e9


class BeamHypotheses:
    """The best finished hypotheses of one image (the reference keeps one: ``num_keep_best = 1``)."""

    def __init__(self, max_len: int, length_penalty: float, keep: int = 1):
        self.longest = max_len - 1  # longest possible hypothesis ([CLS] words [MASK]), the bound used by is_done
        self.length_penalty = length_penalty
        self.keep = keep
        self.hyps: list[tuple[float, list[int]]] = []
        self.worst_score = 1e9

    def add(self, tokens: list[int], sum_logprobs: float) -> None:
        """Offer a finished hypothesis (``[CLS] words [MASK]``) with its summed log-probability."""
        score = sum_logprobs / len(tokens) ** self.length_penalty
        if len(self.hyps) < self.keep or score > self.worst_score:
            self.hyps.append((score, tokens))
            if len(self.hyps) > self.keep:
                self.hyps.sort(key=lambda h: h[0])
                del self.hyps[0]  # the worst; the next one becomes the bar to beat
                self.worst_score = self.hyps[0][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs: float) -> bool:
        """No open beam can still beat the kept hypotheses (the bound divides by the longest possible length)."""
        if len(self.hyps) < self.keep:
            return False
        return self.worst_score >= best_sum_logprobs / self.longest**self.length_penalty

    def best(self) -> list[int] | None:
        return max(self.hyps, key=lambda h: h[0])[1] if self.hyps else None


class _CaptionSteps:
    """Runs the model for one decoding step over the rows still decoding, with or without the k/v cache."""

    def __init__(
        self, model: Beit3ForCaptioning, images: Tensor, bos_id: int, mask_id: int, use_cache: bool, vocab: int | None
    ):
        self.model = model
        self.images = images
        self.bos_id = bos_id
        self.mask_id = mask_id
        self.vocab = vocab
        self.cache: IncrementalState | None = {} if use_cache else None

    def first(self, repeat: int, max_len: int) -> tuple[Tensor, Tensor]:
        """Image + ``[CLS, MASK]`` once per image, each row then repeated ``repeat`` times.

        Returns the log-probs of the first word (B·r, V) and the text buffer (B·r, max_len): ``[CLS]`` followed
        by MASK placeholders that the chosen words overwrite.
        """
        batch = self.images.shape[0]
        tokens = torch.full((batch, max_len), self.mask_id, dtype=torch.long, device=self.images.device)
        tokens[:, 0] = self.bos_id
        text = tokens[:, :2]
        logits, _ = self.model(self.images, text, torch.zeros_like(text), _last(text), incremental_state=self.cache)
        if self.cache is not None:
            self._drop_mask_position()
            self._map_cache(lambda t: t.repeat_interleave(repeat, dim=0))
        else:
            self.images = self.images.repeat_interleave(repeat, dim=0)
        log_probs = self._log_probs(logits)  # logits: (B, V)
        return log_probs.repeat_interleave(repeat, dim=0), tokens.repeat_interleave(repeat, dim=0)

    def select(self, rows: Tensor) -> None:
        """Keep/reorder rows (beam reordering, finished images leaving the batch)."""
        if self.cache is not None:
            self._map_cache(lambda t: t.index_select(0, rows))
        else:
            self.images = self.images.index_select(0, rows)

    def next(self, tokens: Tensor, cur_len: int) -> Tensor:
        """Log-probs (N, V) of the word at text position ``cur_len - 1``; ``tokens[:, :cur_len]`` ends in MASK."""
        if self.cache is not None:
            text = tokens[:, cur_len - 2 : cur_len]  # (N, 2): last word, MASK
            logits, _ = self.model(None, text, None, _last(text), text_len=cur_len, incremental_state=self.cache)
            self._drop_mask_position()
        else:
            text = tokens[:, :cur_len]  # (N, cur_len)
            logits, _ = self.model(self.images, text, torch.zeros_like(text), _last(text))
        return self._log_probs(logits)  # logits: (N, V)

    def _log_probs(self, logits: Tensor) -> Tensor:
        if self.vocab is not None:
            logits = logits[..., : self.vocab]
        return F.log_softmax(logits.float(), dim=-1)

    def _drop_mask_position(self) -> None:
        # The MASK token's key/value must not stay: the next step puts the chosen word at that text position.
        self._map_cache(lambda t: t[:, :, :-1])

    def _map_cache(self, fn: Callable[[Tensor], Tensor]) -> None:
        for layer_cache in self.cache.values():
            for key, tensor in layer_cache.items():
                layer_cache[key] = fn(tensor)


@torch.no_grad()
def beam_search(
    model: Beit3ForCaptioning,
    images: Tensor,
    *,
    num_beams: int = 3,
    max_len: int = 64,
    length_penalty: float = 0.6,
    bos_id: int = 0,
    eos_id: int = 2,
    mask_id: int,
    pad_id: int = 1,
    vocab_size: int | None = None,
    use_cache: bool = True,
) -> list[list[int]]:
    """Beam-search captions for images (B, 3, H, W) → B lists of word ids (specials removed).

    Call ``model.eval()`` first. ``max_len`` counts ``[CLS]`` + words + ``</s>`` + 1 as in the reference
    (``--num_max_bpe_tokens``), so at most ``max_len - 3`` words. ``vocab_size`` restricts the candidates to the first
    logits (None: all of them, as the reference). ``use_cache=False`` recomputes every step from scratch.
    """
    _check_arguments(images, num_beams, max_len, vocab_size, model)
    steps = _CaptionSteps(model, images, bos_id, mask_id, use_cache, vocab_size)
    log_probs, tokens = steps.first(num_beams, max_len)  # (B·K, V), (B·K, max_len)
    vocab = log_probs.shape[-1]
    batch = images.shape[0]
    beam_scores = torch.zeros(batch, num_beams, device=images.device)
    beam_scores[:, 1:] = INACTIVE_BEAM_SCORE
    beam_scores = beam_scores.view(-1)  # (B·K,)
    hypotheses = [BeamHypotheses(max_len, length_penalty) for _ in range(batch)]
    active = list(range(batch))  # images still decoding; image active[i] owns rows i·K … i·K + K - 1
    cur_len = 2  # text length so far: [CLS] + words + the MASK being predicted
    while True:
        closing_all = cur_len + 1 == max_len
        scores = (log_probs + beam_scores[:, None]).view(len(active), num_beams * vocab)
        top_scores, top_ids = (t.tolist() for t in scores.topk(TOPN_PER_BEAM * num_beams, dim=1))
        closes = closing_all or any(index % vocab == eos_id for ids in top_ids for index in ids)
        prefixes = tokens[:, :cur_len].tolist() if closes else []  # one device → host copy, only when needed
        next_items, next_beams = [], []
        for i, item in enumerate(active):
            if hypotheses[item].is_done(top_scores[i][0]):
                continue  # leaves the batch: nothing it could still produce would be kept
            candidates = zip(top_scores[i], (divmod(index, vocab) for index in top_ids[i]))
            beam = _next_beam(hypotheses[item], candidates, i * num_beams, num_beams, eos_id, closing_all, prefixes)
            if beam:
                next_items.append(item)
                next_beams.extend(beam)
        if closing_all or not next_items:
            break
        next_scores, next_words, next_rows = zip(*next_beams)
        rows = torch.tensor(next_rows, device=images.device)
        tokens = tokens.index_select(0, rows)
        tokens[:, cur_len - 1] = torch.tensor(next_words, device=images.device)
        beam_scores = torch.tensor(next_scores, device=images.device)
        steps.select(rows)
        active = next_items
        cur_len += 1
        log_probs = steps.next(tokens, cur_len)
    special = {bos_id, eos_id, pad_id, mask_id}
    return [_words(h.best(), special) for h in hypotheses]


def _next_beam(
    hypotheses: BeamHypotheses,
    candidates: Iterable[tuple[float, tuple[int, int]]],
    first_row: int,
    num_beams: int,
    eos_id: int,
    closing_all: bool,
    prefixes: list[list[int]],
) -> list[tuple[float, int, int]]:
    """One image's next beams as (score, word, source row), from its candidates in decreasing score order.

    A candidate ``</s>`` (or any candidate at the last step) closes its source beam's ``[CLS] words [MASK]`` as a
    hypothesis; the others fill the next beams until ``num_beams`` are found (reference ``eval_batch``).
    """
    beam: list[tuple[float, int, int]] = []
    for score, (beam_id, word) in candidates:
        row = first_row + beam_id
        if word == eos_id or closing_all:
            hypotheses.add(prefixes[row], score)
            continue
        beam.append((score, word, row))
        if len(beam) == num_beams:
            break
    return beam


@torch.no_grad()
def greedy_decode(
    model: Beit3ForCaptioning,
    images: Tensor,
    *,
    max_len: int = 64,
    bos_id: int = 0,
    eos_id: int = 2,
    mask_id: int,
    pad_id: int = 1,
    vocab_size: int | None = None,
    use_cache: bool = True,
) -> list[list[int]]:
    """Most likely word at each step until ``</s>``, same length rule as ``beam_search`` (≤ max_len - 3 words)."""
    _check_arguments(images, 1, max_len, vocab_size, model)
    steps = _CaptionSteps(model, images, bos_id, mask_id, use_cache, vocab_size)
    log_probs, tokens = steps.first(1, max_len)  # (B, V), (B, max_len)
    batch = images.shape[0]
    results: list[list[int]] = [[] for _ in range(batch)]
    special = {bos_id, eos_id, pad_id, mask_id}
    active = list(range(batch))
    cur_len = 2
    while True:
        words = log_probs.argmax(dim=-1)  # (N,)
        tokens[:, cur_len - 1] = words
        words_list = words.tolist()
        finished = {i for i, word in enumerate(words_list) if word == eos_id or cur_len + 1 == max_len}
        if finished:
            prefixes = tokens[:, 1 : cur_len - 1].tolist()  # the words before this step's choice
            for i in finished:
                results[active[i]] = [token for token in prefixes[i] if token not in special]
        keep = [i for i in range(len(active)) if i not in finished]
        if not keep:
            break
        if len(keep) < len(active):
            rows = torch.tensor(keep, device=images.device)
            tokens = tokens.index_select(0, rows)
            steps.select(rows)
            active = [active[i] for i in keep]
        cur_len += 1
        log_probs = steps.next(tokens, cur_len)
    return results


def _last(text: Tensor) -> Tensor:
    """``language_masked_pos`` selecting the last (MASK) position: the vocabulary projection runs only there."""
    wanted = torch.zeros_like(text, dtype=torch.bool)
    wanted[:, -1] = True
    return wanted


def _words(hypothesis: list[int] | None, special: set[int]) -> list[int]:
    """Word ids of a ``[CLS] words [MASK]`` hypothesis without special tokens (like ``skip_special_tokens``)."""
    if hypothesis is None:
        return []
    return [token for token in hypothesis[1:-1] if token not in special]


def _check_arguments(
    images: Tensor, num_beams: int, max_len: int, vocab_size: int | None, model: Beit3ForCaptioning
) -> None:
    if images.dim() != 4:
        raise ValueError(f"caption generation expects images of shape (B, 3, H, W), got {tuple(images.shape)}")
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if max_len < 3:
        raise ValueError(f"max_len must be >= 3 ([CLS], one word slot, </s>), got {max_len}")
    config = getattr(model, "config", None)
    if config is not None and max_len >= config.max_text_positions:
        raise ValueError(f"max_len={max_len} needs text positions beyond the model's {config.max_text_positions}")
    head = getattr(model, "mlm_head", None)
    if vocab_size is not None and head is not None and not 3 <= vocab_size <= head.out_features:
        raise ValueError(f"vocab_size must be in [3, {head.out_features}] (the model's logits), got {vocab_size}")
