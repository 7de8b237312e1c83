"""Batch inference over a JSONL file through the serving runtime, resumable after a crash.

    llmops predict datasets/python-faq/eval.jsonl runs/predictions.jsonl --model exports/v1 --batch-size 8

Input rows: {"id", "question", "context"?} (rendered with the serving prompt, like a chat
request) or {"id", "prompt"} (raw text, like /v1/completions: no template, no stop strings).
Output rows: {"id", "output", "prompt_tokens", "completion_tokens", "finish_reason"}.

Resuming: ids already in OUT are skipped. Each batch is appended as complete lines with one
write, then flushed and fsynced, so a crash loses at most the batch in flight; a truncated last
line (no newline, or not JSON) left by a crash is cut off before appending.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.dataset import read_jsonl
from llmops.errors import InputError
from llmops.prompts import Prompt, chat_format_of
from serving.export import serving_prompt
from serving.runtime import SamplingParams, find_onnx_dir, load_generator


@dataclass
class PredictResult:
    total: int
    """Rows in the input."""
    already_done: int
    """Rows found in OUT before this run."""
    written: int
    """Rows this run appended."""
    dropped_partial_line: bool
    """Whether a truncated last line was cut off OUT."""


def _key(value: Any) -> str:
    return json.dumps(value)


def read_input(path: Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise InputError("input file not found", file=str(path))
    rows, seen = [], set()
    for lineno, row in read_jsonl(path):  # the project's one JSONL reader: errors name file and line
        if not isinstance(row, dict):
            raise InputError("a row must be a JSON object", file=str(path), line=lineno)
        if not isinstance(row.get("id"), str | int) or isinstance(row.get("id"), bool):
            raise InputError("a row needs an 'id' (string or integer)", file=str(path), line=lineno, field="id")
        if _key(row["id"]) in seen:
            raise InputError(f"duplicate id {row['id']!r}", file=str(path), line=lineno, field="id")
        seen.add(_key(row["id"]))
        has_q, has_p = isinstance(row.get("question"), str), isinstance(row.get("prompt"), str)
        if has_q == has_p:
            raise InputError("a row needs either a string 'question' or a string 'prompt'", file=str(path),
                             line=lineno, field="question")
        if "context" in row and row["context"] is not None and not isinstance(row["context"], str):
            raise InputError("'context' must be a string", file=str(path), line=lineno, field="context")
        rows.append(row)
    return rows


def recover_output(path: Path) -> tuple[set[str], bool]:
    """Ids already written to OUT, after cutting off a truncated last line. Returns (ids, cut)."""
    path = Path(path)
    if not path.exists():
        return set(), False
    data = path.read_bytes()
    good_end = data.rfind(b"\n") + 1  # bytes up to the last complete line
    lines = data[:good_end].decode("utf-8").splitlines()
    ids: set[str] = set()
    cut = good_end < len(data)
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            ids.add(_key(json.loads(line)["id"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            if lineno == len(lines):  # the last line: a torn write that happened to end in "\n"
                good_end -= len(line.encode("utf-8")) + 1
                cut = True
                break
            raise InputError("corrupt row in the middle of the output file; fix or remove it",
                             file=str(path), line=lineno) from None
    if cut:
        with open(path, "r+b") as handle:
            handle.truncate(good_end)
            handle.flush()
            os.fsync(handle.fileno())
    return ids, cut


def _append(path: Path, rows: list[dict[str, Any]]) -> None:
    blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    with open(path, "ab") as handle:
        handle.write(blob)
        handle.flush()
        os.fsync(handle.fileno())


def predict_file(in_path: str | Path, out_path: str | Path, model_dir: str | Path, *, batch_size: int = 8,
                 backend: str = "onnx", prompt: Prompt | None = None, max_new_tokens: int | None = None,
                 threads: int | None = None, generator: Any = None, progress: bool = True) -> PredictResult:
    """Generate an output row for every input row not yet in OUT, `batch_size` rows per batch."""
    from tqdm import tqdm

    if batch_size < 1:
        raise InputError("batch size must be >= 1", field="batch_size")
    in_path, out_path = Path(in_path), Path(out_path)
    rows = read_input(in_path)
    done, cut = recover_output(out_path)
    pending = [r for r in rows if _key(r["id"]) not in done]
    result = PredictResult(total=len(rows), already_done=len(rows) - len(pending), written=0,
                           dropped_partial_line=cut)
    if not pending:
        return result
    model_dir = Path(model_dir)
    if generator is None:
        generator = load_generator(model_dir, backend, threads=threads)
    if prompt is None:
        prompt = serving_prompt(find_onnx_dir(model_dir) if backend == "onnx" else model_dir)
    new_tokens = max_new_tokens or prompt.params.max_tokens
    chat = chat_format_of(find_onnx_dir(model_dir) if backend == "onnx" else model_dir)
    templated = SamplingParams(max_new_tokens=new_tokens, temperature=prompt.params.temperature, seed=0,
                               stop=tuple(prompt.params.stop), frequency_penalty=prompt.params.frequency_penalty,
                               presence_penalty=prompt.params.presence_penalty)
    raw = SamplingParams(max_new_tokens=new_tokens, temperature=prompt.params.temperature, seed=0)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(rows), initial=result.already_done, desc="predict", unit="row", disable=not progress)
    try:
        for start in range(0, len(pending), batch_size):
            batch = pending[start:start + batch_size]
            # Raw and templated rows decode with different stop strings: one sub-batch each.
            out_rows: dict[str, dict[str, Any]] = {}
            for is_raw, params in ((False, templated), (True, raw)):
                group = [r for r in batch if ("prompt" in r and isinstance(r["prompt"], str)) == is_raw]
                if not group:
                    continue
                texts = [r["prompt"] if is_raw else prompt.render(
                    chat, question=r["question"], **({"context": r["context"]} if r.get("context") else {}))
                    for r in group]
                for r, c in zip(group, generator.generate(texts, params), strict=True):
                    out_rows[_key(r["id"])] = {"id": r["id"], "output": c.text if is_raw else c.text.strip(),
                                               "prompt_tokens": c.prompt_tokens,
                                               "completion_tokens": c.completion_tokens,
                                               "finish_reason": c.finish_reason}
            _append(out_path, [out_rows[_key(r["id"])] for r in batch])
            result.written += len(batch)
            bar.update(len(batch))
    finally:
        bar.close()
    return result
