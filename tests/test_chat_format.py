"""Chat templates end to end, on a micro model that has one (tests/conftest.py: micro_chat_model).

One prompt file renders to the same text in training, serving, the eval runner and the export's
parity prompts: the model's own chat template when it has one, the plain format when it has none.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from llmops.prompts import ChatFormat, chat_format_of, load_prompt, render_plain

VALUES = {"question": "How do I reverse a list?", "context": "list.reverse() reverses the list in place."}


@pytest.fixture(scope="module")
def answer(repo_root: Path):
    return load_prompt("answer", repo_root / "prompts")


def test_render_equals_the_tokenizers_own_template(answer, micro_chat_model: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(micro_chat_model)
    chat = chat_format_of(micro_chat_model)
    messages = answer.render_messages(**VALUES)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "I can only help with questions about Python." in messages[0]["content"]
    assert VALUES["context"] in messages[1]["content"] and VALUES["question"] in messages[1]["content"]
    want = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert answer.render(chat, **VALUES) == want
    assert want.endswith("<|im_start|>assistant\n")


def test_a_model_without_a_template_gets_the_plain_format(answer, micro_model: Path) -> None:
    assert chat_format_of(micro_model) is None
    text = answer.render(None, question="What is a list?")
    assert text.startswith("### System:\nYou answer questions about the Python") and text.endswith("### Answer:")
    assert text == render_plain(answer.render_messages(question="What is a list?"))
    assert "Context:" not in text  # the optional variable renders as absent


def test_training_puts_the_loss_on_the_assistant_turn_only(answer, micro_chat_model: Path) -> None:
    from transformers import AutoTokenizer

    from training.tokenise import encode_example

    tok = AutoTokenizer.from_pretrained(micro_chat_model)
    row = {"question": VALUES["question"], "context": VALUES["context"], "answer": "Call list.reverse()."}
    enc = encode_example(tok, answer, row, max_length=512, chat=chat_format_of(micro_chat_model))
    first = next(i for i, label in enumerate(enc["labels"]) if label != -100)
    prompt_text = tok.decode(enc["input_ids"][:first])
    assert prompt_text.endswith("<|im_start|>assistant\n") and "<|im_start|>system" in prompt_text
    assert enc["labels"][first:] == enc["input_ids"][first:]
    assert enc["labels"][-1] == tok.eos_token_id
    assert tok.decode(enc["labels"][first:-1]) == "Call list.reverse()."
    capped = encode_example(tok, answer, {**row, "answer": "word " * 200}, max_length=512,
                            chat=chat_format_of(micro_chat_model), max_answer_tokens=8)
    assert sum(label != -100 for label in capped["labels"]) == 8 and capped["labels"][-1] != tok.eos_token_id


def test_server_and_eval_client_render_through_the_template(answer, micro_chat_model: Path) -> None:
    from evals.client import OpenAIClient
    from serving.app import running_server
    from serving.runtime import TorchGenerator

    chat = chat_format_of(micro_chat_model)
    with running_server(micro_chat_model, backend="torch") as url:
        card = httpx.get(f"{url}/v1/models").json()["data"][0]
        assert card["chat_template"] == chat.template
        with OpenAIClient(url) as client:
            client.resolve_model()
            assert client.chat_format == ChatFormat(chat.template, card["special_tokens"])
        body = {"messages": [{"role": "system", "content": VALUES["context"]},
                             {"role": "user", "content": VALUES["question"]}], "max_tokens": 2}
        usage = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).json()["usage"]
    gen = TorchGenerator(micro_chat_model)
    assert usage["prompt_tokens"] == gen.count_tokens(answer.render(chat, **VALUES))


def test_export_parity_prompts_use_the_template(answer, micro_chat_model: Path, repo_root: Path) -> None:
    from serving.export import parity_prompts

    texts = parity_prompts(answer, repo_root / "datasets" / "python-faq" / "eval.jsonl", 2, model_dir=micro_chat_model)
    assert len(texts) == 2 and all(t.startswith("<|im_start|>system\n") for t in texts)


def test_prompt_file_without_a_user_message_is_refused(tmp_path: Path) -> None:
    from llmops.errors import InputError
    from llmops.prompts import load_prompt_file

    path = tmp_path / "bad.yaml"
    path.write_text("id: bad\ndescription: x\nmessages:\n  - {role: system, content: hi}\nvariables: {}\n")
    with pytest.raises(InputError, match="one user message"):
        load_prompt_file(path)
