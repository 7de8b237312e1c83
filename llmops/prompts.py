"""Prompts as versioned files (`prompts/<id>.yaml`): the one instruction format for training and serving.

    llmops prompts show answer

A prompt file holds `id`, `description`, `template` (Jinja2, StrictUndefined), `variables`
(name -> {type, required}), `params` (max_tokens, temperature, stop) and `examples`.
Training renders the template and appends the answer; serving renders it from the chat
messages. One edit to the file reaches both.
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmops.errors import InputError

_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "list": list}


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


class Prompt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    description: str
    template: str
    variables: dict[str, Variable]
    params: Params = Field(default_factory=Params)
    examples: list[dict[str, Any]] = Field(default_factory=list)
    path: Path | None = Field(default=None, exclude=True)

    @cached_property
    def _compiled(self) -> Any:
        import jinja2

        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                 autoescape=False)
        return env.from_string(self.template)

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

    def render(self, **values: Any) -> str:
        """Render the template. Optional variables that are absent render as empty/false."""
        self.check_vars(values)
        full = {name: values.get(name) for name in self.variables}
        full.update(values)
        return self._compiled.render(**full)


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
