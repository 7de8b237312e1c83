"""Prompts as versioned files (`prompts/<id>.yaml`): the one instruction format for training and serving.

    llmops prompts show answer [--model DIR]

A prompt file holds `id`, `description`, `messages` (a system and a user message, each `content` a
Jinja2 template, StrictUndefined), `variables` (name -> {type, required}), `params` (max_tokens,
temperature, stop) and `examples`. `render_messages()` gives the chat messages; `render()` gives
the text a model sees: through the model's own chat template when it has one (`ChatFormat`, read
from the model folder or from a server's /v1/models), else the plain format

    ### System:
    <system message>
    ### User:
    <user message>
    ### Answer:

Training renders the prompt and appends the answer (and the end-of-turn token); serving renders it
from the request's messages; evals and the export's parity check render the same way. One edit to
the file reaches all of them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llmops.errors import InputError

_TYPES: dict[str, type | tuple[type, ...]] = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "list": list}


class Variable(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["string", "integer", "number", "boolean", "list"] = "string"
    required: bool = True
    description: str = ""


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_tokens: int = Field(64, ge=1, le=4096, description="Most tokens to generate.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 means greedy decoding.")
    stop: list[str] = Field(default_factory=list, description="Strings that end generation.")
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0, description=(
        "OpenAI's frequency penalty: a token's logit drops by this much per time it was already generated."))
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0, description=(
        "OpenAI's presence penalty: a token's logit drops by this much once it was generated."))


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user"]
    content: str = Field(min_length=1, description="Jinja2 template of the message text.")


PLAIN_ANSWER_CUE = "### Answer:"


@dataclass(frozen=True)
class ChatFormat:
    """A model's chat template (Jinja2, as in tokenizer_config.json) and the special tokens it may use."""

    template: str
    special_tokens: dict[str, str] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()

    def render(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        # transformers' own renderer (sandboxed Jinja2, trim_blocks/lstrip_blocks, raise_exception),
        # so the text equals tokenizer.apply_chat_template(..., tokenize=False).
        from transformers.utils.chat_template_utils import render_jinja_template

        special: dict[str, Any] = dict(self.special_tokens)  # bos_token, eos_token, ... for the template
        output: Any = render_jinja_template(conversations=[messages], chat_template=self.template,
                                            add_generation_prompt=add_generation_prompt, **special)
        return output[0][0]  # (rendered texts, generation indices); one conversation

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ChatFormat | None:
        if not data or not data.get("template"):
            return None
        return cls(data["template"], dict(data.get("special_tokens") or {}))

    def to_dict(self) -> dict[str, Any]:
        return {"template": self.template, "special_tokens": self.special_tokens}


_SPECIAL = ("bos_token", "eos_token", "pad_token", "unk_token")


def chat_format_of(model_dir: Path | str | None) -> ChatFormat | None:
    """The chat template a model folder declares (chat_template.jinja or tokenizer_config.json), else None.

    Reads the files only (no transformers import), so a gate can key its cache on it without
    loading the model.
    """
    if model_dir is None:
        return None
    folder = Path(model_dir)
    config: dict[str, Any] = {}
    if (folder / "tokenizer_config.json").is_file():
        try:
            config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"unreadable tokenizer config: {exc}", file=str(folder / "tokenizer_config.json")) from None
    template = None
    if (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    elif isinstance(config.get("chat_template"), str):
        template = config["chat_template"]
    if not template:
        return None
    special = {}
    for name in _SPECIAL:
        value = config.get(name)
        if isinstance(value, dict):  # AddedToken serialised as a dict
            value = value.get("content")
        if isinstance(value, str):
            special[name] = value
    return ChatFormat(template, special)


class Prompt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    description: str
    messages: list[Message] = Field(min_length=1)
    variables: dict[str, Variable]
    params: Params = Field(default_factory=Params)
    examples: list[dict[str, Any]] = Field(default_factory=list)
    path: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _message_order(self) -> Prompt:
        roles = [m.role for m in self.messages]
        if roles.count("user") != 1 or roles[-1] != "user" or roles.count("system") > 1:
            raise ValueError("messages must be an optional system message followed by one user message")
        if "chat_template" in self.variables:
            raise ValueError("'chat_template' is reserved and cannot be a variable name")
        return self

    @cached_property
    def _compiled(self) -> list[Any]:
        import jinja2

        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                 autoescape=False)
        return [env.from_string(m.content) for m in self.messages]

    @property
    def system(self) -> str | None:
        """The system message's template text (None without one)."""
        return next((m.content for m in self.messages if m.role == "system"), None)

    @property
    def sha256(self) -> str:
        """Hash of the file's bytes: what lineage records and caches key on."""
        if self.path is not None and self.path.is_file():
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()

    def check_vars(self, values: dict[str, Any]) -> None:
        for name, var in self.variables.items():
            if name not in values or values[name] is None:
                if var.required:
                    raise InputError(f"prompt {self.id!r} needs variable {name!r}", field=name)
                continue
            if not isinstance(values[name], _TYPES[var.type]):
                raise InputError(f"prompt {self.id!r}: variable {name!r} must be {var.type}, "
                                 f"got {type(values[name]).__name__}", field=name)

    def render_messages(self, **values: Any) -> list[dict[str, str]]:
        """The chat messages. Optional variables that are absent render as empty/false."""
        self.check_vars(values)
        full = {name: values.get(name) for name in self.variables}
        full.update(values)
        return [{"role": m.role, "content": t.render(**full)}
                for m, t in zip(self.messages, self._compiled, strict=True)]

    def render(self, chat_template: ChatFormat | None = None, **values: Any) -> str:
        """The prompt text a model sees: its chat template with the generation prompt, else the plain format."""
        messages = self.render_messages(**values)
        if chat_template is not None:
            return chat_template.render(messages)
        return render_plain(messages)


def render_plain(messages: list[dict[str, str]]) -> str:
    """The format of models without a chat template (the project's micro models)."""
    parts = [f"### {m['role'].capitalize()}:\n{m['content']}\n" for m in messages]
    return "".join(parts) + PLAIN_ANSWER_CUE


def load_prompt_file(path: Path) -> Prompt:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("prompt file not found", file=str(path)) from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise InputError(f"invalid YAML: {exc}", file=str(path), line=None if line is None else line + 1) from None
    if not isinstance(data, dict):
        raise InputError("a prompt file must be a mapping", file=str(path))
    try:
        prompt = Prompt(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(err["msg"], file=str(path), field=".".join(str(p) for p in err["loc"])) from None
    prompt.path = path
    return prompt


def load_prompt(prompt_id: str, prompts_dir: Path | None = None) -> Prompt:
    """Load `prompts/<id>.yaml` (or a path to a prompt file)."""
    candidate = Path(prompt_id)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return load_prompt_file(candidate)
    if prompts_dir is None:
        from llmops.settings import Settings

        prompts_dir = Settings.load().prompts_dir
    path = Path(prompts_dir) / f"{prompt_id}.yaml"
    if not path.is_file():
        raise InputError(f"no prompt with id {prompt_id!r} (looked for {path})")
    return load_prompt_file(path)


def load_all(prompts_dir: Path) -> dict[str, Prompt]:
    return {p.stem: load_prompt_file(p) for p in sorted(Path(prompts_dir).glob("*.yaml"))}
