"""Tokenise datasets in their prompts' format (the model's chat template) into a content-hashed Parquet cache.

    llmops tokenise                      # training/config.yaml: dataset(s), prompt, base model, max_length

This is the project's feature store: training and evaluation (perplexity) read the same
tokenised rows, and the folder name is the hash of everything that decides them (every dataset
file's sha256, every prompt file's sha256, the tokenizer files' sha256 (the chat template among
them), max_length and the encoder version), so an unchanged input is a cache hit and a changed one
can never be confused with it. A row with a `prompt` field is rendered with that prompt, others
with the config's `prompt`; the splits of all datasets are concatenated in the order given (column
`dataset`: the index of the dataset a row came from).
Layout: <home>/cache/tokenised/<key>/{train,eval}.parquet + meta.json; columns id, input_ids,
labels (-100 on prompt tokens), n_tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.dataset import read_jsonl
from llmops.errors import InputError
from llmops.files import atomic_dir, sha256_bytes, sha256_file
from llmops.prompts import ChatFormat, Prompt, load_prompt

ENCODER_VERSION = 3  # bump when encode_example changes what it produces


def encode_example(tok, prompt: Prompt, row: dict[str, Any], max_length: int,
                   chat: ChatFormat | None = None, max_answer_tokens: int = 0) -> dict[str, list[int]]:
    """input_ids = prompt tokens + answer tokens + end of turn; labels mask the prompt with -100.

    With a chat template (`chat`), the prompt is the system and user turns plus the assistant
    header, and the loss is on the assistant turn only: its content and the end-of-turn token
    (the tokenizer's eos, `<|im_end|>` for ChatML). Without one, the plain format, the answer
    after a space. `max_answer_tokens` (0: no cap) cuts a long answer, and a cut answer has no
    end-of-turn token (the model must not learn to stop mid-answer).
    """
    values = {"question": row["question"]}
    if row.get("context") and "context" in prompt.variables:
        values["context"] = row["context"]
    prompt_ids = tok(prompt.render(chat, **values), add_special_tokens=False).input_ids
    answer_text = row["answer"] if chat is not None else " " + row["answer"]
    answer_ids = tok(answer_text, add_special_tokens=False).input_ids + [tok.eos_token_id]
    if max_answer_tokens and len(answer_ids) > max_answer_tokens:
        answer_ids = answer_ids[:max_answer_tokens]
    if len(prompt_ids) + len(answer_ids) > max_length:
        # Keep at least a quarter of the window for the answer: an example whose answer is cut away
        # entirely has no loss at all (every label -100) and makes the eval loss NaN. The prompt is
        # cut from the left so that the question and the answer cue stay next to the answer.
        min_answer = min(len(answer_ids), max(1, max_length // 4))
        prompt_ids = prompt_ids[-(max_length - min_answer):]
        answer_ids = answer_ids[: max_length - len(prompt_ids)]
    ids = prompt_ids + answer_ids
    labels = [-100] * len(prompt_ids) + answer_ids
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


@dataclass
class TokenisedData:
    path: Path
    key: str
    cached: bool
    meta: dict[str, Any]

    def ids(self, split: str, dataset: int | None = None) -> list[str]:
        """The split's row ids, aligned with rows(split, dataset)."""
        import pyarrow.parquet as pq

        table = pq.read_table(self.path / f"{split}.parquet", columns=["id", "dataset"])
        return [rid for rid, src in zip(table.column("id").to_pylist(), table.column("dataset").to_pylist(),
                                        strict=True) if dataset is None or src == dataset]

    def rows(self, split: str, dataset: int | None = None) -> list[dict[str, Any]]:
        """The split's rows; `dataset`: only those of the i-th dataset given to tokenise()."""
        import pyarrow.parquet as pq

        table = pq.read_table(self.path / f"{split}.parquet")
        sources = table.column("dataset").to_pylist()
        return [{"input_ids": list(i), "attention_mask": [1] * len(i), "labels": list(lab)}
                for i, lab, src in zip(table.column("input_ids").to_pylist(), table.column("labels").to_pylist(),
                                       sources, strict=True) if dataset is None or src == dataset]


def cache_key(dataset_dirs: list[Path], prompt_paths: list[Path], tokenizer_dir: Path, max_length: int,
              max_answer_tokens: int = 0) -> str:
    if Path(tokenizer_dir).is_dir():
        tok_files = sorted(p for p in Path(tokenizer_dir).glob("*") if p.is_file()
                           and ("token" in p.name or p.name == "chat_template.jinja"))
        tokenizer: Any = {p.name: sha256_file(p) for p in tok_files}
    else:  # a hub id: its name (and the pinned transformers) identify the tokenizer
        tokenizer = str(tokenizer_dir)
    material = {
        "data": [{p.name: sha256_file(p) for p in sorted(Path(d).glob("*.jsonl"))} for d in dataset_dirs],
        "prompts": sorted(sha256_file(p) for p in prompt_paths),
        "tokenizer": tokenizer,
        "max_length": max_length,
        "max_answer_tokens": max_answer_tokens,
        "encoder": ENCODER_VERSION,
    }
    return sha256_bytes(json.dumps(material, sort_keys=True).encode())[:16]


def _row_prompts(dataset_dirs: list[Path], default_id: str, prompts_dir: Path) -> dict[str, Any]:
    """Every prompt the rows name (and the default), loaded once; an unknown id names its file and line."""
    prompts = {default_id: load_prompt(default_id, prompts_dir)}
    for folder in dataset_dirs:
        for split in ("train", "eval"):
            path = Path(folder) / f"{split}.jsonl"
            for lineno, row in read_jsonl(path):
                pid = row.get("prompt") if isinstance(row, dict) else None
                if pid and pid not in prompts:
                    try:
                        prompts[pid] = load_prompt(pid, prompts_dir)
                    except InputError as exc:
                        raise InputError(str(exc), file=str(path), line=lineno, field="prompt") from None
    return prompts


def tokenise(dataset_dirs: Path | list[Path], prompt_id: str, prompts_dir: Path, tokenizer_dir: Path,
             max_length: int, cache_root: Path, max_answer_tokens: int = 0) -> TokenisedData:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    dirs = [Path(dataset_dirs)] if isinstance(dataset_dirs, (str, Path)) else [Path(d) for d in dataset_dirs]
    prompts = _row_prompts(dirs, prompt_id, prompts_dir)
    key = cache_key(dirs, [p.path for p in prompts.values()], tokenizer_dir, max_length, max_answer_tokens)
    target = Path(cache_root) / key
    if (target / "meta.json").is_file():
        return TokenisedData(target, key, True, json.loads((target / "meta.json").read_text()))
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tok.model_max_length = 1 << 30  # lengths are handled by encode_example; silence the long-text warning
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    chat = ChatFormat(tok.chat_template, {}) if getattr(tok, "chat_template", None) else None
    meta: dict[str, Any] = {"key": key, "datasets": [str(d) for d in dirs], "prompt": prompt_id,
                            "prompts": {pid: p.sha256 for pid, p in sorted(prompts.items())},
                            "chat_template": chat.sha256 if chat else None, "max_length": max_length,
                            "max_answer_tokens": max_answer_tokens,
                            "splits": {}}
    with atomic_dir(target) as tmp:
        for split in ("train", "eval"):
            ids, inputs, labels, sources = [], [], [], []
            rows = [(i, row) for i, d in enumerate(dirs) for _, row in read_jsonl(d / f"{split}.jsonl")]
            for source, row in rows:
                enc = encode_example(tok, prompts[row.get("prompt") or prompt_id], row, max_length, chat,
                                     max_answer_tokens)
                ids.append(row["id"])
                inputs.append(enc["input_ids"])
                labels.append(enc["labels"])
                sources.append(source)
            table = pa.table({"id": ids, "input_ids": inputs, "labels": labels,
                              "n_tokens": [len(x) for x in inputs], "dataset": sources})
            pq.write_table(table, tmp / f"{split}.parquet")
            meta["splits"][split] = {"rows": len(ids), "tokens": sum(len(x) for x in inputs),
                                     "answer_tokens": sum(sum(1 for v in lab if v != -100) for lab in labels)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return TokenisedData(target, key, False, meta)
