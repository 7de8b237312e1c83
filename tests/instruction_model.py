"""A real (tiny) Llama trained in seconds to follow this repo's prompts, for gate-integrity tests.

The PR gate must fail when a prompt edit breaks behaviour. The default model is too small to
follow instructions, so these tests train a micro model on the repo's own rendered prompts:
with the refusal instruction it refuses out-of-scope questions, with the JSON instruction it
answers in JSON, and the same questions rendered WITHOUT those instructions teach it to answer
plainly. It is a real transformer served by the real server; what it outputs depends on the
prompt text it is given, which is all the gate-integrity tests need.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

REFUSAL = "I can only help with questions about Python."
ANSWER_REFUSAL_CLAUSE = ' If a question is not about Python, or asks for something harmful, reply: "I can only help with questions about Python."'
JSON_INSTRUCTION = ('Reply with exactly one JSON object and nothing else, in the form {"answer": "<your answer>", '
                    '"confidence": <a number from 0 to 1>}.')


def remove_refusal_instruction(template: str) -> str:
    assert ANSWER_REFUSAL_CLAUSE in template, "prompts/answer.yaml no longer has the refusal clause"
    return template.replace(ANSWER_REFUSAL_CLAUSE, "")


def break_json_instruction(template: str) -> str:
    assert JSON_INSTRUCTION in template, "prompts/answer_json.yaml no longer has the JSON instruction"
    return template.replace(JSON_INSTRUCTION, "Reply in plain prose.")


def _target_for(case: Any) -> str:
    """An output meant to satisfy the case's assertions (checked afterwards)."""
    asserts = case.assert_
    kinds = {a.type for a in asserts}
    words = [str(a.value) for a in asserts if a.type in ("contains", "icontains") and a.value]
    if "must-refuse" in kinds:
        text = REFUSAL
    elif "grounded-in-context" in kinds and case.vars.get("context"):
        text = " ".join(case.vars["context"].split()[:30]) + (" " + " ".join(words) if words else "")
    else:
        text = " ".join(words) if words else "Python is a programming language."
    if kinds & {"is-json", "json-schema"} or case.prompt == "answer_json":
        text = json.dumps({"answer": text, "confidence": 0.9})
    return text


def training_pairs(repo_root: Path, rows: int = 16) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """(rendered prompt, target) pairs: the cases, their no-instruction variants, and eval rows."""
    from evals.assertions import run_assertion
    from evals.rule_evals import load_cases, read_eval_rows
    from llmops.prompts import load_all

    prompts = load_all(repo_root / "prompts")
    cases = load_cases(repo_root / "evals" / "cases", repo_root / "prompts")
    def edited(prompt, fn):
        messages = [m.model_copy(update={"content": fn(m.content)}) if m.role == "system" else m
                    for m in prompt.messages]
        return type(prompt)(**{**prompt.model_dump(exclude={"messages"}), "messages": messages})

    plain = {
        "answer": edited(prompts["answer"], remove_refusal_instruction),
        "answer_json": edited(prompts["answer_json"], break_json_instruction),
    }
    pairs: list[tuple[str, str]] = []
    stats = {"cases": 0, "satisfied": 0}
    for case in cases:
        stats["cases"] += 1
        target = _target_for(case)
        if all(run_assertion(a, target, case.vars).passed for a in case.assert_):
            stats["satisfied"] += 1
            pairs.append((prompts[case.prompt].render(**case.vars), target))
            if case.prompt in plain and ("must-refuse" in {a.type for a in case.assert_}
                                         or case.prompt == "answer_json"):
                # Without the instruction: answer plainly, never refuse, never JSON.
                words = re.sub(r"[{}\"]", "", target.replace(REFUSAL, "Sure, here is an answer."))
                pairs.append((plain[case.prompt].render(**case.vars), words[:120]))
    for row in read_eval_rows(repo_root / "datasets" / "python-faq", rows):
        reference = " ".join(row["answer"].split()[:24])
        pairs.append((prompts["answer"].render(question=row["question"]), reference))
    return pairs, stats


def build_instruction_model(out_dir: Path, repo_root: Path, *, steps: int = 300, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.tokenizer import python_reference_text, train_tokenizer

    pairs, _ = training_pairs(repo_root)
    texts = [p + " " + t for p, t in pairs] + python_reference_text()[:60]
    tok = train_tokenizer(texts, vocab_size=2048, model_max_length=1024)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    examples = []
    for prompt, target in pairs:
        p = tok(prompt, add_special_tokens=False).input_ids
        t = tok(" " + target, add_special_tokens=False).input_ids + [tok.eos_token_id]
        examples.append((p + t, [-100] * len(p) + t))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    batch = 16
    for step in range(steps):
        idx = torch.randint(0, len(examples), (batch,), generator=gen).tolist()
        width = max(len(examples[i][0]) for i in idx)
        ids = torch.full((batch, width), tok.pad_token_id)
        labels = torch.full((batch, width), -100)
        mask = torch.zeros((batch, width), dtype=torch.long)
        for row, i in enumerate(idx):
            x, y = examples[i]
            ids[row, : len(x)] = torch.tensor(x)
            labels[row, : len(y)] = torch.tensor(y)
            mask[row, : len(x)] = 1
        for group in opt.param_groups:
            group["lr"] = 3e-3 * min(1.0, (step + 1) / 20) * (1 - step / steps) + 1e-4
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    out = Path(out_dir)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out
