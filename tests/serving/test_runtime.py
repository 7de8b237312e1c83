"""The ORT KV-cache loop against torch: greedy tokens, batching, stop strings, streaming, sampling.

    .venv/bin/pytest tests/serving/test_runtime.py -q
"""

from __future__ import annotations

import numpy as np
import pytest

from llmops.errors import InputError
from serving.hf_baseline import hf_generate
from serving.runtime import Generator, SamplingParams
from serving.sampling import choose

PROMPTS = ["def f(x):\n    return", "What is a lambda? é", "import os", "A much longer prompt about classes and methods:"]


def test_ort_greedy_equals_torch_and_hf_generate(ort_untied, torch_untied):
    params = SamplingParams(max_new_tokens=16, ignore_eos=True)  # random weights may emit eos early
    for prompt in PROMPTS[:3]:
        ids = ort_untied.encode(prompt)
        ort = ort_untied.generate([prompt], params)[0]
        ours_torch = torch_untied.generate([prompt], params)[0]
        hf = hf_generate(torch_untied.model, torch_untied.tokenizer, [ids], params)[0]
        assert ort.token_ids == ours_torch.token_ids == hf
        assert len(set(ort.token_ids)) > 3  # varied tokens: positions and cache really matter
        assert ort.prompt_tokens == len(ids) and ort.completion_tokens == 16 and ort.finish_reason == "length"


def test_batched_left_padded_equals_unbatched(ort_untied, torch_untied):
    params = SamplingParams(max_new_tokens=12, ignore_eos=True)
    lengths = {len(ort_untied.encode(p)) for p in PROMPTS}
    assert len(lengths) > 1  # the batch really is padded
    for gen in (ort_untied, torch_untied):
        single = [gen.generate([p], params)[0] for p in PROMPTS]
        batched = gen.generate(PROMPTS, params)
        assert [c.token_ids for c in batched] == [c.token_ids for c in single]
        assert [c.text for c in batched] == [c.text for c in single]


def test_stop_strings_cut_text_and_finish(ort_untied):
    full = ort_untied.generate([PROMPTS[2]], SamplingParams(max_new_tokens=30))[0]
    visible = [ch for ch in full.text[3:] if ch.isalpha()]
    stop = visible[0]  # a character the model emits after a few tokens
    cut = ort_untied.generate([PROMPTS[2]], SamplingParams(max_new_tokens=30, stop=(stop,)))[0]
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.index(stop)]
    assert stop not in cut.text
    assert cut.completion_tokens < full.completion_tokens
    assert full.token_ids[: cut.completion_tokens] == cut.token_ids


def test_eos_ends_generation(ort_untied):
    prompt_ids = ort_untied.encode(PROMPTS[0])
    first = ort_untied.generate_ids([prompt_ids], SamplingParams(max_new_tokens=1))[0].token_ids[0]
    ort_untied.eos_ids.add(first)  # treat the first greedy token as eos
    try:
        done = ort_untied.generate_ids([prompt_ids], SamplingParams(max_new_tokens=10))[0]
        ignored = ort_untied.generate_ids([prompt_ids], SamplingParams(max_new_tokens=10, ignore_eos=True))[0]
    finally:
        ort_untied.eos_ids.discard(first)
    assert done.token_ids == [first] and done.finish_reason == "stop"
    assert ignored.completion_tokens == 10 and ignored.finish_reason == "length"


@pytest.mark.parametrize("stop", [(), ("e",), ("ti", "un")])
def test_stream_deltas_concatenate_to_text(ort_untied, stop):
    for prompt in PROMPTS:
        params = SamplingParams(max_new_tokens=30, stop=stop, ignore_eos=True)
        chunks = list(ort_untied.stream(prompt, params))
        final = ort_untied.generate([prompt], params)[0]
        assert chunks[-1].completion is not None and all(c.completion is None for c in chunks[:-1])
        assert "".join(c.text for c in chunks) == final.text == chunks[-1].completion.text
        assert chunks[-1].completion.token_ids == final.token_ids
        if not stop:
            assert len(chunks) > 2  # really incremental


def test_stream_holds_back_partial_characters_and_stop_prefixes():
    assert Generator._stream_safe("abc\ufffd", ()) == "abc"
    assert Generator._stream_safe("answer #", ("###",)) == "answer "
    assert Generator._stream_safe("answer ##", ("###",)) == "answer "
    assert Generator._stream_safe("answer", ("###",)) == "answer"


def test_sampling_is_seeded_and_differs_from_greedy(ort_untied):
    sampled = SamplingParams(max_new_tokens=20, temperature=1.0, top_p=0.9, seed=7)
    a = ort_untied.generate(PROMPTS, sampled)
    b = ort_untied.generate(PROMPTS, sampled)
    c = ort_untied.generate(PROMPTS, SamplingParams(max_new_tokens=20, temperature=1.0, top_p=0.9, seed=8))
    greedy = ort_untied.generate(PROMPTS, SamplingParams(max_new_tokens=20))
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.token_ids for x in a] != [x.token_ids for x in c]
    assert [x.token_ids for x in a] != [x.token_ids for x in greedy]


def test_top_p_keeps_the_nucleus_only():
    import numpy as np

    logits = np.log(np.array([0.6, 0.3, 0.05, 0.05]))
    rng = np.random.default_rng(0)
    picks = {choose(logits, SamplingParams(temperature=1.0, top_p=0.8), rng) for _ in range(200)}
    assert picks == {0, 1}


def test_a_vanishing_temperature_is_greedy_not_nan():
    import numpy as np

    # 5e-324 (the smallest float, sent by the schemathesis fuzz run) overflows logits / temperature
    logits = np.array([1.0, 3.0, 2.0], dtype=np.float32)
    rng = np.random.default_rng(0)
    for temperature in (5e-324, 1e-300):
        assert choose(logits, SamplingParams(temperature=temperature, top_p=5e-324), rng) == 1


def test_frequency_and_presence_penalties_match_openais_formula(ort_untied, torch_untied):
    """OpenAI's penalties, through both runtimes and batched, against an independent torch
    logits processor on `model.generate`: logit[t] -= count[t] * frequency + (count[t] > 0) * presence."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    class OpenAIPenalties(LogitsProcessor):
        def __init__(self, start: int, frequency: float, presence: float) -> None:
            self.start, self.frequency, self.presence = start, frequency, presence

        def __call__(self, input_ids, scores):
            counts = torch.zeros_like(scores)
            counts.scatter_add_(1, input_ids[:, self.start:], torch.ones_like(input_ids[:, self.start:], dtype=scores.dtype))
            return scores - counts * self.frequency - (counts > 0).to(scores.dtype) * self.presence

    plain = SamplingParams(max_new_tokens=24, ignore_eos=True)
    penalised = SamplingParams(max_new_tokens=24, ignore_eos=True, frequency_penalty=0.8, presence_penalty=0.4)
    prompt = PROMPTS[2]
    ids = ort_untied.encode(prompt)
    with torch.inference_mode():
        out = torch_untied.model.generate(
            input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), max_new_tokens=24,
            do_sample=False, pad_token_id=torch_untied.pad_id, eos_token_id=None, temperature=None, top_p=None,
            top_k=None, logits_processor=LogitsProcessorList([OpenAIPenalties(len(ids), 0.8, 0.4)]))
    reference = out[0, len(ids):].tolist()
    got = ort_untied.generate([prompt], penalised)[0].token_ids
    assert got == torch_untied.generate([prompt], penalised)[0].token_ids == reference
    greedy = ort_untied.generate([prompt], plain)[0].token_ids
    assert got != greedy and len(set(got)) > len(set(greedy))  # the penalty really changes the answer
    batched = ort_untied.generate(PROMPTS, penalised)  # per-row counts: rows do not penalise each other
    assert batched[2].token_ids == got
    assert [c.token_ids for c in batched] == [ort_untied.generate([p], penalised)[0].token_ids for p in PROMPTS]
    for name in ("frequency_penalty", "presence_penalty"):
        with pytest.raises(InputError, match=name):
            SamplingParams(**{name: 2.5})


def test_a_banned_opening_changes_only_the_first_token(ort_untied, torch_untied):
    """first_token_bans (the guards' ban of the refusal's opening) puts those ids at -inf before the
    first token only: the answer opens with another token, and a banned id may still come later."""
    prompt = PROMPTS[2]
    plain = SamplingParams(max_new_tokens=24, ignore_eos=True)
    greedy = ort_untied.generate([prompt], plain)[0].token_ids
    banned = SamplingParams(max_new_tokens=24, ignore_eos=True, first_token_bans=(greedy[0],))
    got = ort_untied.generate([prompt], banned)[0].token_ids
    assert got[0] != greedy[0]
    assert got == torch_untied.generate([prompt], banned)[0].token_ids
    logits, _ = ort_untied._prefill(*_one_row(ort_untied.encode(prompt)))
    second = int(np.argsort(-np.asarray(logits[0], dtype=np.float64))[1])
    assert got[0] == second  # the best token that is not banned
    both = ort_untied.generate([prompt, PROMPTS[0]], banned)  # per row, batched
    assert both[0].token_ids == got and both[1].token_ids == ort_untied.generate([PROMPTS[0]], banned)[0].token_ids
    assert got[1] != got[0]
    later = SamplingParams(max_new_tokens=24, ignore_eos=True, first_token_bans=(greedy[0], got[1]))
    assert ort_untied.generate([prompt], later)[0].token_ids == got  # a ban does not reach past the first token


def _one_row(ids: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(ids)
    return (np.array([ids], dtype=np.int64), np.ones((1, n), dtype=np.int64), np.arange(n, dtype=np.int64)[None])


def test_context_window_and_bad_params(ort_untied):
    window = ort_untied.max_positions
    with pytest.raises(InputError, match="context window"):
        ort_untied.generate_ids([[5] * window], SamplingParams(max_new_tokens=1))
    near = ort_untied.generate_ids([[5] * (window - 3)], SamplingParams(max_new_tokens=50))[0]
    assert near.completion_tokens == 3 and near.finish_reason == "length"
    with pytest.raises(InputError, match="empty prompt"):
        ort_untied.generate_ids([[]], SamplingParams())
    with pytest.raises(InputError, match="top_p"):
        SamplingParams(top_p=0.0)
    with pytest.raises(InputError, match="temperature"):
        SamplingParams(temperature=-1.0)


def test_int8_runs_through_the_same_loop(exported):
    from serving.runtime import OrtGenerator, load_generator

    int8 = load_generator(exported.out_dir, "onnx", variant="int8")
    assert isinstance(int8, OrtGenerator) and int8.model_dir == exported.variants["int8"]
    out = int8.generate(["def f():"], SamplingParams(max_new_tokens=5))[0]
    assert out.completion_tokens == 5
    with pytest.raises(InputError, match="no model.onnx"):
        load_generator(exported.out_dir, "onnx", variant="fp16")
