"""Caption generation: cache equivalence, greedy vs an independent loop, the reference beam-search rules."""

from __future__ import annotations

import math
from itertools import product

import pytest
import torch
from test_heads import randomized
from torch import Tensor, nn

from beit3_lightning.modeling import Beit3Config
from beit3_lightning.modeling.generation import BeamHypotheses, beam_search, greedy_decode
from beit3_lightning.modeling.heads import Beit3ForCaptioning

BOS, PAD, EOS = 0, 1, 2
VOCAB = 24
MASK = VOCAB - 1
CONFIG = Beit3Config(embed_dim=32, num_heads=4, ffn_dim=64, num_layers=2, img_size=32, patch_size=8, vocab_size=VOCAB)


def random_captioner(seed: int = 0, eos_bias: float = 1.5) -> Beit3ForCaptioning:
    """A tiny captioner with large random weights, so that the image and every earlier word change the output."""
    model = randomized(Beit3ForCaptioning(CONFIG), seed)
    with torch.no_grad():
        model.mlm_head.weight.mul_(3.0)  # peaky but image-dependent next-word distributions
        model.mlm_head.bias[EOS] += eos_bias  # captions of varied lengths
    return model


def images(batch: int, seed: int = 1) -> Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def full_forward_next_logits(model: Beit3ForCaptioning, image: Tensor, words: list[int]) -> Tensor:
    """Logits of the next word, recomputing image + [CLS] words [MASK] from scratch (no cache)."""
    text = torch.tensor([[BOS, *words, MASK]])
    logits, _ = model(image[None], text, torch.zeros_like(text))
    return logits[0, -1]


def independent_greedy(model: Beit3ForCaptioning, image: Tensor, max_len: int) -> list[int]:
    words: list[int] = []
    while True:
        word = int(full_forward_next_logits(model, image, words).argmax())
        if word == EOS or len(words) + 2 + 1 == max_len:  # cur_len = len(words) + 2
            return [w for w in words if w not in (BOS, PAD, MASK)]  # as skip_special_tokens
        words.append(word)


# ----- the cache -----------------------------------------------------------------------------------------------------
def test_cached_steps_equal_full_forward_logits():
    model = random_captioner()
    batch_images = images(2)
    words = torch.tensor([[5, 9, 7, 11], [3, 3, 14, 6]])
    state: dict = {}
    with torch.no_grad():
        first = torch.tensor([[BOS, MASK]] * 2)
        logits, state = model(batch_images, first, torch.zeros_like(first), incremental_state=state)
        for b in range(2):
            torch.testing.assert_close(
                logits[b, 1], full_forward_next_logits(model, batch_images[b], []), atol=1e-5, rtol=0
            )
        for step in range(words.shape[1]):
            for cache in state.values():  # the MASK key/value leaves the cache
                cache["prev_key"], cache["prev_value"] = cache["prev_key"][:, :, :-1], cache["prev_value"][:, :, :-1]
            text = torch.stack([words[:, step], torch.full((2,), MASK)], dim=1)
            logits, state = model(None, text, None, text_len=step + 3, incremental_state=state)
            for b in range(2):
                expected = full_forward_next_logits(model, batch_images[b], words[b, : step + 1].tolist())
                torch.testing.assert_close(logits[b, 1], expected, atol=1e-5, rtol=0)


# ----- greedy ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_equals_an_independent_loop_without_cache(seed):
    model = random_captioner(seed)
    batch_images = images(5, seed=seed + 10)
    expected = [independent_greedy(model, img, max_len=12) for img in batch_images]
    assert len({len(e) for e in expected}) > 1  # the batch mixes lengths: finished rows must leave correctly
    assert greedy_decode(model, batch_images, max_len=12, mask_id=MASK) == expected
    assert greedy_decode(model, batch_images, max_len=12, mask_id=MASK, use_cache=False) == expected


def test_beam_search_with_one_beam_and_no_length_penalty_is_greedy():
    model = random_captioner(2)
    batch_images = images(5, seed=3)
    greedy = greedy_decode(model, batch_images, max_len=12, mask_id=MASK)
    assert beam_search(model, batch_images, num_beams=1, length_penalty=0.0, max_len=12, mask_id=MASK) == greedy


# ----- beam search on a real model ------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_beams", [1, 3])
def test_beam_search_cache_and_batching_do_not_change_results(num_beams):
    model = random_captioner(3)
    batch_images = images(4, seed=4)
    cached = beam_search(model, batch_images, num_beams=num_beams, max_len=10, mask_id=MASK)
    assert beam_search(model, batch_images, num_beams=num_beams, max_len=10, mask_id=MASK, use_cache=False) == cached
    one_by_one = [
        beam_search(model, img[None], num_beams=num_beams, max_len=10, mask_id=MASK)[0] for img in batch_images
    ]
    assert one_by_one == cached


def test_forced_sequence_is_decoded():
    """Identity layers, MASK position rows pointing at one word each: the model spells out a known caption."""
    target = [7, 11, 5, 9, EOS]
    model = Beit3ForCaptioning(CONFIG).eval()
    with torch.no_grad():
        for layer in model.beit3.encoder.layers:  # zero residual branches → every layer is the identity
            for linear in (layer.self_attn.out_proj.A, layer.self_attn.out_proj.B, layer.ffn.A.fc2, layer.ffn.B.fc2):
                linear.weight.zero_()
                linear.bias.zero_()
        model.beit3.text_embed.weight[MASK] = 0
        model.mlm_head.weight.zero_()
        model.mlm_head.bias.zero_()
        for j, word in enumerate(target):
            # After j words the MASK sits at text index j + 1, i.e. position row j + 3 (fairseq offset 2).
            model.beit3.encoder.embed_positions.B.weight[j + 3] = 10 * torch.eye(32)[j]
            model.mlm_head.weight[word, j] = 5.0
    batch_images = images(2)
    assert greedy_decode(model, batch_images, mask_id=MASK) == [target[:-1]] * 2
    assert beam_search(model, batch_images, mask_id=MASK) == [target[:-1]] * 2
    # max_len caps the caption at max_len - 3 words (reference: [CLS] words [MASK] closes at cur_len + 1 == max_len).
    assert beam_search(model, batch_images, mask_id=MASK, max_len=5) == [target[:2]] * 2
    assert greedy_decode(model, batch_images, mask_id=MASK, max_len=5) == [target[:2]] * 2


# ----- beam search rules on a scripted next-word distribution ---------------------------------------------------------
class ScriptedCaptioner(nn.Module):
    """Next-word probabilities looked up from the words so far, behind the captioning model's call protocol.

    Its "cache" stores token ids as (N, 1, S, 1) keys after an image marker, so the decoder's beam reordering and
    MASK dropping are exercised; the lookup asserts that the cached text reads ``[CLS] words [MASK]``.
    """

    def __init__(self, table: dict[tuple[int, ...], dict[int, float]], vocab: int = 8):
        super().__init__()
        self.table = table
        self.vocab = vocab

    def next_logits(self, text: Tensor) -> Tensor:  # (N, T) → (N, V)
        assert (text[:, 0] == BOS).all() and (text[:, -1] == self.vocab - 1).all(), text
        rows = []
        for row in text[:, 1:-1].tolist():
            probs = self.table.get(tuple(row), self.table["default"])
            rows.append([math.log(probs.get(w, 1e-9)) for w in range(self.vocab)])
        return torch.tensor(rows)

    def forward(self, image, text_ids, padding_mask, language_masked_pos=None, text_len=None, incremental_state=None):
        if incremental_state is None:  # full recompute: image + whole text
            text = text_ids
        else:
            layer = incremental_state.setdefault(0, {})
            new = text_ids.float()[:, None, :, None]  # (N, 1, T, 1)
            previous = torch.full((text_ids.shape[0], 1, 1, 1), -1.0) if image is not None else layer["prev_key"]
            keys = torch.cat([previous, new], dim=2)
            layer["prev_key"], layer["prev_value"] = keys, keys.clone()
            assert (keys[:, 0, 0, 0] == -1).all(), "the image part of the cache was lost"
            assert keys.shape[2] == 1 + (text_len or text_ids.shape[1]), "stale MASK keys were left in the cache"
            text = keys[:, 0, 1:, 0].long()
        out = torch.zeros(text_ids.shape[0], text_ids.shape[1], self.vocab)
        out[:, -1] = self.next_logits(text)  # only the MASK position is ever read
        return (out if language_masked_pos is None else out[language_masked_pos.bool()]), incremental_state


SCRIPT_MASK = 7
# Greedy follows 3 → 3 → </s>; the best normalised hypothesis is "4 </s>":
#   "</s>"      log(.10)          / 2^.6 = -1.519
#   "3 </s>"    log(.5 · .28)     / 3^.6 = -1.017
#   "4 </s>"    log(.4 · .9)      / 3^.6 = -0.529   ← best
#   "3 3 </s>"  log(.5 · .37 · .9) / 4^.6 = -0.780
TREE = {
    (): {3: 0.5, 4: 0.4, EOS: 0.1},
    (3,): {EOS: 0.28, 3: 0.37, 4: 0.35},
    (4,): {EOS: 0.9, 3: 0.05, 4: 0.05},
    "default": {EOS: 0.9, 3: 0.05, 4: 0.05},
}


def scripted(table, images_count: int = 2, **kwargs) -> list[list[int]]:
    model = ScriptedCaptioner(table)
    batch_images = torch.zeros(images_count, 3, 4, 4)
    return beam_search(model, batch_images, mask_id=SCRIPT_MASK, max_len=10, **kwargs)


def exhaustive_best(table, max_len: int, length_penalty: float, words=(3, 4), vocab: int = 8) -> list[int]:
    """The best normalised hypothesis by enumerating every caption over ``words`` (independent of the decoder).

    Same model of a hypothesis as the reference: ``[CLS] w1..wd [MASK]`` closed by ``</s>`` (score = log p(words) +
    log p(</s>)), or, at the longest d = max_len − 3, by whichever token comes next (its log-prob is added, the token
    is not); score / (d + 2) ** length_penalty.
    """
    model = ScriptedCaptioner(table, vocab)

    def log_probs(prefix: tuple[int, ...]) -> list[float]:
        text = torch.tensor([[BOS, *prefix, SCRIPT_MASK]])
        return torch.log_softmax(model.next_logits(text)[0], dim=-1).tolist()

    best, best_score = None, -math.inf
    for d in range(max_len - 2):
        for prefix in product(words, repeat=d):
            total = sum(log_probs(prefix[:i])[w] for i, w in enumerate(prefix))
            closing = max(log_probs(prefix)) if d == max_len - 3 else log_probs(prefix)[EOS]
            score = (total + closing) / (d + 2) ** length_penalty
            if score > best_score:
                best, best_score = list(prefix), score
    return best


def random_tree(seed: int, max_len: int, words=(3, 4)) -> dict:
    """Random next-word distributions over </s> and ``words`` for every prefix the search can reach."""
    gen = torch.Generator().manual_seed(seed)
    table: dict = {"default": {EOS: 0.9, 3: 0.05, 4: 0.05}}
    for d in range(max_len - 2):
        for prefix in product(words, repeat=d):
            probs = torch.rand(len(words) + 1, generator=gen) ** 2 + 0.02
            probs = (probs / probs.sum()).tolist()
            table[prefix] = dict(zip((EOS, *words), probs))
    return table


def test_exhaustive_search_of_the_scripted_tree_prefers_4():
    # The tree of the comment above: the enumeration picks "4 </s>", greedy would take "3 3 </s>".
    assert exhaustive_best(TREE, max_len=10, length_penalty=0.6) == [4]


@pytest.mark.parametrize("length_penalty", [0.0, 0.6, 1.0])
def test_wide_beam_search_equals_exhaustive_search(length_penalty):
    """With as many beams as captions over {3, 4} of the longest length (2^3 = 8), no candidate is ever pruned:
    beam search must return the exhaustive optimum (the reference's is_done bound is exact)."""
    max_len, found_better_than_greedy = 6, False
    for seed in range(6):
        table = random_tree(seed, max_len)
        expected = exhaustive_best(table, max_len, length_penalty)
        model = ScriptedCaptioner(table)
        got = beam_search(model, torch.zeros(1, 3, 4, 4), num_beams=8, max_len=max_len,
                          length_penalty=length_penalty, mask_id=SCRIPT_MASK)  # fmt: skip
        assert got == [expected], seed
        greedy = greedy_decode(model, torch.zeros(1, 3, 4, 4), max_len=max_len, mask_id=SCRIPT_MASK)
        found_better_than_greedy |= greedy != [expected]
    assert found_better_than_greedy  # the trees are hard enough that greedy decoding is not optimal


@pytest.mark.parametrize("use_cache", [True, False])
def test_beam_search_finds_the_best_normalised_hypothesis(use_cache):
    assert scripted(TREE, num_beams=3, use_cache=use_cache) == [[4], [4]]
    model = ScriptedCaptioner(TREE)
    assert greedy_decode(model, torch.zeros(2, 3, 4, 4), mask_id=SCRIPT_MASK, use_cache=use_cache) == [[3, 3]] * 2
    assert scripted(TREE, num_beams=1, use_cache=use_cache) == [[3, 3], [3, 3]]


def test_one_beam_with_length_penalty_looks_past_an_early_eos():
    """Reference quirk: with num_beams=1 an </s> closes a hypothesis but the runner-up word continues."""
    tree = {(): {EOS: 0.5, 3: 0.45}, (3,): {EOS: 0.95}, "default": {EOS: 0.9}}
    # "</s>": log .5 / 2^.6 = -0.457; "3 </s>": log(.45 · .95) / 3^.6 = -0.440 → the longer one wins.
    assert scripted(tree, num_beams=1) == [[3], [3]]
    assert scripted(tree, num_beams=1, length_penalty=0.0) == [[], []]  # then it is greedy
    assert greedy_decode(ScriptedCaptioner(tree), torch.zeros(1, 3, 4, 4), mask_id=SCRIPT_MASK) == [[]]


@pytest.mark.parametrize("max_len", [3, 4, 7])
def test_captions_never_exceed_max_len_minus_three_words(max_len):
    never_ending = {"default": {3: 0.6, 4: 0.39, EOS: 0.01}}
    model = ScriptedCaptioner(never_ending)
    out = beam_search(model, torch.zeros(1, 3, 4, 4), mask_id=SCRIPT_MASK, max_len=max_len)
    assert out == [[3] * (max_len - 3)]
    assert greedy_decode(model, torch.zeros(1, 3, 4, 4), mask_id=SCRIPT_MASK, max_len=max_len) == out


def test_vocab_size_limits_the_candidate_words():
    tree = {(): {6: 0.8, 3: 0.15, EOS: 0.05}, "default": {EOS: 0.9}}
    assert scripted(tree, num_beams=2) == [[6], [6]]
    assert scripted(tree, num_beams=2, vocab_size=6) == [[3], [3]]


def test_special_tokens_are_removed_from_the_caption():
    tree = {(): {PAD: 0.9, 3: 0.1}, (PAD,): {3: 0.9}, (PAD, 3): {EOS: 0.99}, "default": {EOS: 0.9}}
    assert scripted(tree, num_beams=2) == [[3], [3]]  # the decoded "<pad> 3" loses its <pad>


# ----- bookkeeping and errors -----------------------------------------------------------------------------------------
def test_beam_hypotheses_keep_the_best_and_stop_when_nothing_can_win():
    hyps = BeamHypotheses(max_len=10, length_penalty=1.0, keep=2)
    hyps.add([0, 5, 23], -3.0)  # score -1.0
    assert not hyps.is_done(-100.0)  # fewer than `keep` hypotheses
    hyps.add([0, 5, 6, 23], -2.0)  # score -0.5
    hyps.add([0, 23], -3.0)  # score -1.5: worse than both, not kept
    assert sorted(s for s, _ in hyps.hyps) == [-1.0, -0.5] and hyps.worst_score == -1.0
    hyps.add([0, 7, 23], -1.5)  # -0.5 as well: the -1.0 one is evicted
    assert hyps.worst_score == -0.5 and hyps.best() in ([0, 5, 6, 23], [0, 7, 23])
    assert hyps.is_done(-4.5)  # -4.5 / 9 = -0.5 cannot beat -0.5
    assert not hyps.is_done(-4.4)


def test_bad_arguments_raise_clear_errors():
    model = random_captioner()
    with pytest.raises(ValueError, match=r"max_len must be >= 3"):
        beam_search(model, images(1), mask_id=MASK, max_len=2)
    with pytest.raises(ValueError, match=r"images of shape \(B, 3, H, W\)"):
        greedy_decode(model, images(1)[0], mask_id=MASK)
    with pytest.raises(ValueError, match="num_beams must be >= 1"):
        beam_search(model, images(1), mask_id=MASK, num_beams=0)
    with pytest.raises(ValueError, match=r"vocab_size must be in \[3, 24\]"):
        beam_search(model, images(1), mask_id=MASK, vocab_size=30)
