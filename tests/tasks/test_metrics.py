"""Metrics on tiny hand-computed cases, checked against the definitions of the unilm handlers and coco-caption."""

import math
from itertools import product

import numpy as np
import pytest
import torch

from beit3_lightning.metrics import (
    CaptionMetric,
    ImageTextRetrievalRecall,
    TopKAccuracy,
    VQAScore,
    bleu,
    bleu_scores,
    cider_d,
    cider_d_scores,
    retrieval_recalls,
    simple_tokenize,
)

# ---------------------------------------------------------------- accuracy / VQA


def test_top_k_accuracy_hand_values_over_two_batches():
    metric = TopKAccuracy(top_k=(1, 2))
    # row 0: gold 0 is best (top1 hit); row 1: gold 2 is 2nd (top2 hit only); row 2: gold 1 is last (miss)
    metric.update(torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.9, 0.5], [0.5, 0.0, 0.4]]), torch.tensor([0, 2, 1]))
    # row 3: gold 1 best
    metric.update(torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([1]))
    result = metric.compute()
    assert result["acc1"].item() == pytest.approx(50.0)  # 2 of 4
    assert result["acc2"].item() == pytest.approx(75.0)  # 3 of 4


def test_top_k_accuracy_clamps_k_to_the_number_of_classes():
    metric = TopKAccuracy()  # (1, 5) on a 2-class problem (NLVR2): acc5 is 100 like timm's accuracy
    metric.update(torch.tensor([[0.2, 0.8], [0.7, 0.3]]), torch.tensor([0, 0]))
    assert {k: v.item() for k, v in metric.compute().items()} == pytest.approx({"acc1": 50.0, "acc5": 100.0})
    with pytest.raises(ValueError, match="expected logits"):
        metric.update(torch.zeros(2, 2), torch.zeros(3, dtype=torch.long))


def test_vqa_score_hand_value():
    metric = VQAScore()
    logits = torch.tensor([[0.1, 2.0, 0.3], [5.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    targets = torch.tensor([[0.0, 1.0, 0.3], [0.3, 0.6, 0.0], [0.9, 0.0, 0.0]])
    metric.update(logits, targets)  # picks answers 1, 0, 2 -> scores 1.0, 0.3, 0.0
    assert metric.compute().item() == pytest.approx((1.0 + 0.3 + 0.0) / 3 * 100)  # 43.333


# ---------------------------------------------------------------- retrieval

IMAGES = {10: [1.0, 0.0, 0.0], 20: [0.0, 1.0, 0.0], 30: [0.0, 0.0, 1.0]}
# (caption feature, its image id)
TEXTS = [([0.9, 0.1, 0.0], 10), ([0.0, 0.8, 0.2], 10), ([0.5, 0.4, 0.0], 20), ([0.0, 0.0, 1.0], 30)]
# TR@1: img10 -> t0 (10) hit; img20 -> t1 (10) miss; img30 -> t3 hit: 2/3
# IR@1: t0 -> 10 hit; t1 -> 20 miss; t2 -> 10 miss; t3 -> 30 hit: 2/4
# @5 and @10 are clamped to 4 texts / 3 images: 100
EXPECTED_RECALL = {"tr_r1": 200 / 3, "tr_r5": 100.0, "tr_r10": 100.0, "ir_r1": 50.0, "ir_r5": 100.0, "ir_r10": 100.0}
EXPECTED_RECALL["average_score"] = sum(EXPECTED_RECALL.values()) / 6  # 86.111


def caption_rows(order: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Caption-level rows (image id, image feature, text feature), as a retrieval eval batch yields them."""
    ids = torch.tensor([TEXTS[i][1] for i in order])
    images = torch.tensor([IMAGES[TEXTS[i][1]] for i in order])
    texts = torch.tensor([TEXTS[i][0] for i in order])
    return ids, images, texts


def as_floats(result: dict) -> dict[str, float]:
    return {k: float(v) for k, v in result.items()}


def test_retrieval_recall_hand_values_with_duplicated_and_shuffled_image_rows():
    metric = ImageTextRetrievalRecall(chunk_size=2)
    for order in ([2, 0], [3, 1]):  # image 10 appears twice, ids arrive unsorted
        ids, images, texts = caption_rows(order)
        metric.update(ids, image_feats=images, text_feats=texts)
    assert as_floats(metric.compute()) == pytest.approx(EXPECTED_RECALL)


def test_retrieval_recall_separate_image_and_text_updates_and_text_dedup():
    metric = ImageTextRetrievalRecall()
    metric.update(torch.tensor(list(IMAGES)), image_feats=torch.tensor(list(IMAGES.values())))
    ids, _, texts = caption_rows([0, 1, 2, 3, 0])  # the last row repeats caption 0 (sampler padding)
    metric.update(ids, text_feats=texts, text_ids=torch.tensor([0, 1, 2, 3, 0]))
    assert as_floats(metric.compute()) == pytest.approx(EXPECTED_RECALL)

    without_ids = ImageTextRetrievalRecall()
    without_ids.update(torch.tensor(list(IMAGES)), image_feats=torch.tensor(list(IMAGES.values())))
    without_ids.update(ids, text_feats=texts)
    assert without_ids.compute()["ir_r1"].item() == pytest.approx(60.0)  # the repeat counts: 3 hits of 5


def test_retrieval_recall_matches_brute_force_ranking_on_random_data():
    torch.manual_seed(0)
    image_ids = torch.arange(12)
    text_image_ids = torch.randint(0, 12, (30,))
    image_feats, text_feats = torch.randn(12, 8), torch.randn(30, 8)
    result = retrieval_recalls(image_feats, image_ids, text_feats, text_image_ids, chunk_size=5)
    scores = (image_feats @ text_feats.T).tolist()
    for k in (1, 5, 10):
        tr_hits = 0
        for i in range(12):
            ranked = sorted(range(30), key=lambda t, i=i: -scores[i][t])[:k]
            tr_hits += any(text_image_ids[t].item() == i for t in ranked)
        ir_hits = 0
        for t in range(30):
            ranked = sorted(range(12), key=lambda i, t=t: -scores[i][t])[:k]
            ir_hits += text_image_ids[t].item() in ranked
        assert result[f"tr_r{k}"] == pytest.approx(tr_hits / 12 * 100)
        assert result[f"ir_r{k}"] == pytest.approx(ir_hits / 30 * 100)


def test_retrieval_recall_errors_are_explicit():
    metric = ImageTextRetrievalRecall()
    metric.update(torch.tensor([1]), image_feats=torch.ones(1, 3))
    metric.update(torch.tensor([2]), text_feats=torch.ones(1, 3))
    with pytest.raises(ValueError, match="never added, e.g. image id 2"):
        metric.compute()
    with pytest.raises(ValueError, match="needs image_feats, text_feats"):
        metric.update(torch.tensor([1]))


# ---------------------------------------------------------------- captioning


# Outputs of pycocoevalcap's PTBTokenizer (Java) + punctuation filter, recorded once for these inputs.
PTB_TOKENISED = {
    "A dog's toy, on the MAT.": "a dog 's toy on the mat",
    "Two people don't walk; they run!": "two people do n't walk they run",
    'A man in a "red" shirt (smiling) at the T-shirt shop.': (
        "a man in a red shirt -lrb- smiling -rrb- at the t-shirt shop"
    ),
    "It's a 3.5-inch disk, isn't it?": "it 's a 3.5-inch disk is n't it",
    "The dogs' owners can't see 'them' -- really": "the dogs owners ca n't see them really",
    "A bowl of fruit: apples, pears & grapes.": "a bowl of fruit apples pears & grapes",
    "Kids playing frisbee at the park,with friends": "kids playing frisbee at the park with friends",
    "10,000 people; at a game!": "10,000 people at a game",
    "You're we'll they've I'm he'd": "you 're we 'll they 've i 'm he 'd",
}


@pytest.mark.parametrize(("text", "expected"), PTB_TOKENISED.items())
def test_simple_tokenize_matches_recorded_ptb_output(text, expected):
    assert simple_tokenize(text) == expected.split()


def test_cider_d_hand_values():
    # one image: idf = log(1) − log(1) = 0 for every n-gram, so CIDEr is 0 even for a perfect caption
    assert cider_d({1: "a cat"}, {1: ["a cat"]}) == 0.0
    # two images, exact matches: "a" has df 2 (idf 0), the rest idf log 2; cosine 1 for n = 1, 2, no 3/4-grams
    # -> 10 · (1 + 1 + 0 + 0) / 4 = 5 per image
    assert cider_d({1: "a cat", 2: "a dog"}, {1: ["a cat"], 2: ["a dog"]}) == pytest.approx(5.0)
    # image 1 against "a cat sat": cos = 1/√2 for n = 1, 2; bigram lengths 1 vs 2 -> penalty exp(−1/72)
    # -> 10 · 2/√2 · exp(−1/72) / 4 = 3.486769; image 2 still 5
    scores = cider_d_scores({1: "a cat", 2: "a dog"}, {1: ["a cat sat"], 2: ["a dog"]})
    assert scores[1] == pytest.approx(10 * 2 / math.sqrt(2) * math.exp(-1 / 72) / 4)
    assert scores[1] == pytest.approx(3.486769, abs=1e-6)
    assert scores[2] == pytest.approx(5.0)


def brute_force_cider_d(predictions: dict, references: dict, sigma: float = 6.0) -> float:
    """CIDEr-D from dense numpy vectors over an explicit n-gram vocabulary (independent re-derivation)."""
    tokens = {i: p.split() for i, p in predictions.items()}
    ref_tokens = {i: [r.split() for r in refs] for i, refs in references.items()}

    def grams(words, n):
        return [tuple(words[j : j + n]) for j in range(len(words) - n + 1)]

    total = 0.0
    for image_id in predictions:
        per_ref = []
        for ref in ref_tokens[image_id]:
            similarity = 0.0
            for n in range(1, 5):
                vocab = sorted(
                    {g for refs in ref_tokens.values() for r in refs for g in grams(r, n)}
                    | set(grams(tokens[image_id], n))
                )
                df = np.array([sum(any(g in grams(r, n) for r in refs) for refs in ref_tokens.values()) for g in vocab])
                idf = math.log(len(predictions)) - np.log(np.maximum(df, 1.0))
                hyp = np.array([grams(tokens[image_id], n).count(g) for g in vocab]) * idf
                rv = np.array([grams(ref, n).count(g) for g in vocab]) * idf
                dot = float(np.minimum(hyp, rv) @ rv)
                norms = np.linalg.norm(hyp) * np.linalg.norm(rv)
                similarity += dot / norms if norms > 0 else dot
            delta = max(len(tokens[image_id]) - 1, 0) - max(len(ref) - 1, 0)
            per_ref.append(similarity / 4 * math.exp(-(delta**2) / (2 * sigma**2)))
        total += 10 * sum(per_ref) / len(per_ref)
    return total / len(predictions)


def test_cider_d_matches_dense_vector_re_derivation_on_three_images():
    predictions = {1: "a man riding a horse", 2: "two dogs play in the snow", 3: "a red bus on the street"}
    references = {
        1: ["a man rides a brown horse", "a person on a horse in a field"],
        2: ["two dogs playing in snow", "dogs run in the snow together", "a dog in the snow"],
        3: ["a red double decker bus", "a bus parked on the city street"],
    }
    assert cider_d(predictions, references) == pytest.approx(brute_force_cider_d(predictions, references), rel=1e-9)


def test_bleu_hand_values():
    # p1..p4 = 5/6, 4/5, 3/4, 2/3 -> BLEU-4 = (1/3)^(1/4) = 0.759836; equal lengths -> no brevity penalty
    assert bleu({1: "a cat sat on the mat"}, {1: ["the cat sat on the mat"]}) == pytest.approx((1 / 3) ** 0.25)
    # "the cat" vs "the cat sat": p1 = p2 = 1, p3 = p4 = 1e-15/1e-9 = 1e-6 (coco-caption smoothing)
    # BLEU-4 = (1e-12)^(1/4) · exp(1 − 3/2) = 1e-3 · 0.606531
    assert bleu({1: "the cat"}, {1: ["the cat sat"]}) == pytest.approx(1e-3 * math.exp(-0.5), rel=1e-6)
    # closest reference length with ties to the shorter: refs of length 3 and 5 for a 4-word hypothesis
    # -> r = 3 < c = 4, no penalty, BLEU-1 = 4/4 (clipped by the max count over references)
    assert bleu_scores({1: "a b c d"}, {1: ["a b c", "a b c d e"]})[0] == pytest.approx(1.0)
    # clipping: "the the the" vs "the cat": 1 of 3 unigrams counts; r = 2 < c = 3 -> BLEU-1 = 1/3
    assert bleu({1: "the the the"}, {1: ["the cat"]}, n=1) == pytest.approx(1 / 3)


def test_bleu_brevity_penalty_uses_the_closest_reference_length_not_the_shortest():
    # 4-word hypothesis, references of 2 and 5 words: the closest is 5 (|5 − 4| = 1 < 2), so r = 5 > c = 4 and the
    # brevity penalty exp(1 − 5/4) applies; every hypothesis word is in a reference (BLEU-1 precision 1).
    assert bleu({1: "a b c d"}, {1: ["a b", "a b c d e"]}, n=1) == pytest.approx(math.exp(1 - 5 / 4), rel=1e-6)


def test_bleu_is_corpus_level_not_an_average_of_sentences():
    predictions, references = {1: "a b", 2: "c d e f"}, {1: ["a b"], 2: ["c x e y"]}
    # unigram matches 2 + 2 of 2 + 4 guesses; bigram matches 1 + 0 of 1 + 3 -> BLEU-2 = √(4/6 · 1/4)
    assert bleu(predictions, references, n=2) == pytest.approx(math.sqrt(4 / 6 * 1 / 4))


def test_caption_metric_keeps_first_caption_per_image_and_round_trips_unicode():
    references = {1: ["a cat"], 2: ["a dog"], 3: ["a café"]}
    metric = CaptionMetric(references=lambda: references)
    metric.update(torch.tensor([1, 2]), ["a cat", "a dog"])
    metric.update([2, 3], ["a bird", "a café"])  # image 2 again (sampler padding): ignored
    result = metric.compute()
    assert metric.last_predictions == {1: "a cat", 2: "a dog", 3: "a café"}
    assert result["CIDEr"].item() == pytest.approx(cider_d(metric.last_predictions, references), rel=1e-6)
    assert result["BLEU-4"].item() == pytest.approx(bleu(metric.last_predictions, references), rel=1e-6)


def test_caption_metric_errors_are_explicit():
    metric = CaptionMetric()
    metric.update([1], ["a cat"])
    with pytest.raises(ValueError, match="no references"):
        metric.compute()
    metric.set_references({2: ["a dog"]})
    with pytest.raises(ValueError, match="have no reference captions, e.g. 1"):
        metric.compute()
    with pytest.raises(ValueError, match="2 image ids for 1 captions"):
        metric.update([1, 2], ["x"])


@pytest.mark.parametrize(("hyp", "ref"), list(product(["", "a"], ["a b", "a"])))
def test_cider_d_handles_empty_and_one_word_captions(hyp, ref):
    scores = cider_d_scores({1: hyp, 2: "x y"}, {1: [ref], 2: ["x y"]})
    assert all(math.isfinite(v) and v >= 0 for v in scores.values())


def test_cider_d_length_penalty_counts_bigrams_for_one_word_and_empty_captions():
    """coco-caption's ``counts2vec`` takes the length from the bigram counts: 0 for one word (and for none), so a
    one-word caption is 1 bigram shorter than a two-word reference, 2 shorter than a three-word one."""
    predictions = {1: "cat", 2: "dog", 3: ""}
    references = {1: ["cat", "a cat", "the big cat"], 2: ["dog", ""], 3: ["one bird"]}
    # Every reference n-gram occurs in the references of one image only: idf = log 3 − log 1 for all of them.
    # Image 1, "cat" (unigram vector (log 3) on "cat"; no bigrams, so n = 2..4 add nothing):
    #   vs "cat":          cos 1,    δ = 0 − 0 = 0
    #   vs "a cat":        cos 1/√2, δ = 0 − 1 = −1 → exp(−1/72)
    #   vs "the big cat":  cos 1/√3, δ = 0 − 2 = −2 → exp(−4/72)
    #   → 10 · (1 + exp(−1/72)/√2 + exp(−4/72)/√3) / 4 n-gram orders / 3 references
    image_1 = 10 * (1 + math.exp(-1 / 72) / math.sqrt(2) + math.exp(-4 / 72) / math.sqrt(3)) / 4 / 3
    # Image 2: "dog" vs "dog" (cos 1, δ 0); the empty reference gives 0 but still counts in the mean: 10 · 1 / 4 / 2.
    image_2 = 10 * 1 / 4 / 2
    scores = cider_d_scores(predictions, references)
    assert scores == pytest.approx({1: image_1, 2: image_2, 3: 0.0}, rel=1e-12)
    assert cider_d(predictions, references) == pytest.approx((image_1 + image_2) / 3, rel=1e-12)
    # A two-word caption against the one-word reference "cat" is penalised the same as one word against two.
    two_words = cider_d_scores({1: "a cat", 2: "dog", 3: ""}, {1: ["cat"], 2: ["dog"], 3: ["one bird"]})
    # "a cat" vs "cat": unigram cos = log 3 · log 3 / (√2 log 3 · log 3) = 1/√2 ("a" is in no reference of
    # image 1: df 0 → idf log 3 − log max(1, 0) = log 3); δ = 1 − 0 → exp(−1/72).
    assert two_words[1] == pytest.approx(10 * math.exp(-1 / 72) / math.sqrt(2) / 4, rel=1e-12)
