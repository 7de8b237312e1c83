"""Tokenise a dataset in a prompt's instruction format into a content-hashed Parquet cache.

    llmops tokenise                      # training/config.yaml: dataset, prompt, base model, max_length

This is the project's feature store: training and evaluation (perplexity) read the same
tokenised rows, and the folder name is the hash of everything that decides them (the dataset
files' sha256, the prompt file's sha256, the tokenizer files' sha256, max_length and the encoder
version), so an unchanged input is a cache hit and a changed one can never be confused with it.
Layout: <home>/cache/tokenised/<key>/{train,eval}.parquet + meta.json; columns id, input_ids,
labels (-100 on prompt tokens), n_tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.files import atomic_dir, sha256_bytes, sha256_file

ENCODER_VERSION = 1  # bump when encode_example changes what it produces


@dataclass
class TokenisedData:
    path: Path
    key: str
    cached: bool
    meta: dict[str, Any]

    def rows(self, split: str) -> list[dict[str, Any]]:
        import pyarrow.parquet as pq

        table = pq.read_table(self.path / f"{split}.parquet")
        return [{"input_ids": list(i), "attention_mask": [1] * len(i), "labels": list(lab)}
                for i, lab in zip(table.column("input_ids").to_pylist(), table.column("labels").to_pylist(),
                                  strict=True)]


def cache_key(dataset_dir: Path, prompt_path: Path, tokenizer_dir: Path, max_length: int) -> str:
    if Path(tokenizer_dir).is_dir():
        tok_files = sorted(p for p in Path(tokenizer_dir).glob("*token*") if p.is_file())
        tokenizer: Any = {p.name: sha256_file(p) for p in tok_files}
    else:  # a hub id: its name (and the pinned transformers) identify the tokenizer
        tokenizer = str(tokenizer_dir)
    material = {
        "data": {p.name: sha256_file(p) for p in sorted(Path(dataset_dir).glob("*.jsonl"))},
        "prompt": sha256_file(prompt_path),
        "tokenizer": tokenizer,
        "max_length": max_length,
        "encoder": ENCODER_VERSION,
    }
    return sha256_bytes(json.dumps(material, sort_keys=True).encode())[:16]


def tokenise(dataset_dir: Path, prompt_id: str, prompts_dir: Path, tokenizer_dir: Path, max_length: int,
             cache_root: Path) -> TokenisedData:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    from llmops.dataset import read_jsonl
    from llmops.prompts import load_prompt
    from training.finetune import encode_example

    prompt = load_prompt(prompt_id, prompts_dir)
    key = cache_key(dataset_dir, prompt.path, tokenizer_dir, max_length)
    target = Path(cache_root) / key
    if (target / "meta.json").is_file():
        return TokenisedData(target, key, True, json.loads((target / "meta.json").read_text()))
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tok.model_max_length = 1 << 30  # lengths are handled by encode_example; silence the long-text warning
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    meta: dict[str, Any] = {"key": key, "dataset": str(dataset_dir), "prompt": prompt.id,
                            "prompt_sha256": prompt.sha256, "max_length": max_length, "splits": {}}
    with atomic_dir(target) as tmp:
        for split in ("train", "eval"):
            ids, inputs, labels = [], [], []
            for _, row in read_jsonl(Path(dataset_dir) / f"{split}.jsonl"):
                enc = encode_example(tok, prompt, row, max_length)
                ids.append(row["id"])
                inputs.append(enc["input_ids"])
                labels.append(enc["labels"])
            table = pa.table({"id": ids, "input_ids": inputs, "labels": labels,
                              "n_tokens": [len(x) for x in inputs]})
            pq.write_table(table, tmp / f"{split}.parquet")
            meta["splits"][split] = {"rows": len(ids), "tokens": sum(len(x) for x in inputs),
                                     "answer_tokens": sum(sum(1 for v in lab if v != -100) for lab in labels)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return TokenisedData(target, key, False, meta)
