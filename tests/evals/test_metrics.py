"""Reference metrics against values worked out by hand.

    .venv/bin/pytest tests/evals/test_metrics.py
"""

from __future__ import annotations

import pytest

from evals.metrics import corpus_scores, exact_match, normalize_answer, rouge_l, token_f1


def test_normalize_answer() -> None:
    assert normalize_answer("The  GIL, (mostly)!") == "gil mostly"
    assert normalize_answer("An apple a day") == "apple day"


def test_exact_match_after_normalisation() -> None:
    assert exact_match("The GIL.", "gil") == 1.0
    assert exact_match("the GIL lock", "gil") == 0.0


def test_token_f1_by_hand() -> None:
    # pred "cat sat" (2 tokens), ref "cat sat on mat" (4): common 2, P = 1, R = 0.5, F1 = 2/3
    assert token_f1("The cat sat", "the cat sat on the mat") == pytest.approx(2 / 3)
    # repeated tokens count once per occurrence: pred [a1,a1,b2] ref [a1,b2,b2] -> common 2, P = R = 2/3
    assert token_f1("x x y", "x y y") == pytest.approx(2 / 3)
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("", "cat") == 0.0


def test_rouge_l_by_hand() -> None:
    # LCS of [the cat sat on the mat] and [the cat was on the mat] is "the cat on the mat" = 5 of 6
    assert rouge_l("the cat sat on the mat", "the cat was on the mat") == pytest.approx(5 / 6)
    # LCS 2 ("a c") of pred 3 / ref 4 tokens: P = 2/3, R = 1/2, F = 2PR/(P+R) = 4/7
    assert rouge_l("a b c", "a c d e") == pytest.approx(4 / 7)
    # Porter stemming: "lists" and "list" are one token
    assert rouge_l("sorting lists", "sort list") == pytest.approx(1.0)
    assert rouge_l("", "anything") == 0.0


def test_corpus_scores_are_means() -> None:
    scores = corpus_scores(["The GIL.", "dog"], ["gil", "cat"])
    # ROUGE keeps articles: [the gil] vs [gil] -> P = 1/2, R = 1, F = 2/3; mean (2/3 + 0) / 2 = 1/3.
    # F1/EM drop "the": row 1 scores 1, row 2 scores 0; mean 1/2.
    assert scores == {"rouge_l": pytest.approx(1 / 3), "token_f1": pytest.approx(0.5),
                      "exact_match": pytest.approx(0.5)}


def test_corpus_scores_rejects_misaligned_input() -> None:
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        corpus_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no predictions"):
        corpus_scores([], [])
