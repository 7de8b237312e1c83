"""Batch prediction: batched output equals the runtime's, resume after an interruption or a torn line.

    .venv/bin/pytest tests/serving/test_predict.py -q
"""

from __future__ import annotations

import json

import pytest

from llmops.cli import main
from llmops.errors import InputError
from serving.predict import predict_file

ROWS = [{"id": f"q{i}", "question": q} for i, q in enumerate(
    ["What is a lambda?", "How do I copy a file?", "What is a tuple?", "How do I read a file?", "What is pip?"])]
ROWS += [{"id": 5, "question": "What is this?", "context": "A context."}, {"id": "raw", "prompt": "def f(x):"}]


@pytest.fixture(scope="module")
def generator(exported):
    from serving.runtime import OrtGenerator

    return OrtGenerator(exported.variants["fp32"])


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_predict_matches_runtime_and_resumes(exported, generator, tmp_path):
    from llmops.prompts import load_prompt_file
    from serving.runtime import SamplingParams

    src = write_rows(tmp_path / "in.jsonl", ROWS)
    full = tmp_path / "full.jsonl"
    res = predict_file(src, full, exported.out_dir, batch_size=3, generator=generator, progress=False)
    assert (res.total, res.already_done, res.written) == (7, 0, 7)
    out = read_rows(full)
    assert [r["id"] for r in out] == [r["id"] for r in ROWS]
    prompt = load_prompt_file(exported.variants["fp32"] / "prompt.yaml")
    want = generator.generate([prompt.render(question=ROWS[5]["question"], context="A context.")],
                              SamplingParams(max_new_tokens=prompt.params.max_tokens, stop=tuple(prompt.params.stop),
                                             frequency_penalty=prompt.params.frequency_penalty,
                                             presence_penalty=prompt.params.presence_penalty))
    assert out[5]["output"] == want[0].text.strip() and out[5]["completion_tokens"] == want[0].completion_tokens
    raw = generator.generate(["def f(x):"], SamplingParams(max_new_tokens=prompt.params.max_tokens))[0]
    assert out[6]["output"] == raw.text

    # Interrupted run: only the first 3 input rows were processed, then the rest on a rerun.
    part = tmp_path / "part.jsonl"
    predict_file(write_rows(tmp_path / "head.jsonl", ROWS[:3]), part, exported.out_dir, generator=generator,
                 progress=False)
    res = predict_file(src, part, exported.out_dir, batch_size=3, generator=generator, progress=False)
    assert (res.already_done, res.written, res.dropped_partial_line) == (3, 4, False)
    assert read_rows(part) == out

    # A crash mid-write: the last line is torn; it is cut and its row regenerated.
    torn = tmp_path / "torn.jsonl"
    text = full.read_text()
    torn.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 1] + text.splitlines()[-1][:15])
    res = predict_file(src, torn, exported.out_dir, generator=generator, progress=False)
    assert (res.already_done, res.written, res.dropped_partial_line) == (6, 1, True)
    assert read_rows(torn) == out

    # Nothing left to do: no model is loaded, nothing written.
    res = predict_file(src, full, tmp_path / "no-model-here", progress=False)
    assert (res.already_done, res.written) == (7, 0)


def test_predict_cli_and_bad_input(exported, tmp_path):
    src = write_rows(tmp_path / "in.jsonl", ROWS[:2])
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(src), str(out), "--model", str(exported.out_dir), "--batch-size", "2"]) == 0
    assert len(read_rows(out)) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "question": "ok"}\n{"id": 1, "question": "dup"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2 \[id\].*duplicate"):
        predict_file(bad, out, exported.out_dir)
    bad.write_text('{"id": 1, "question": "ok"}\n{"id": 2}\n')
    assert main(["predict", str(bad), str(tmp_path / "o2.jsonl"), "--model", str(exported.out_dir)]) == 2
    bad.write_text('{"id": 1, "question": "ok"}\nnot json\n')
    with pytest.raises(InputError, match="bad.jsonl:2"):
        predict_file(bad, out, exported.out_dir)
    corrupt = tmp_path / "corrupt.jsonl"
    corrupt.write_text('{"id": "q0", "output": ""}\nnot json\n{"id": "q1", "output": ""}\n')
    with pytest.raises(InputError, match="corrupt.jsonl:2"):
        predict_file(src, corrupt, exported.out_dir)
