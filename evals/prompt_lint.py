"""Lint the prompt files: variables, example rendering and context length, by file and line.

    llmops prompts lint [--model DIR] [PROMPT_FILE...]

Findings (each an llmops.report.Finding with the YAML file and line):
- a file that is not valid YAML or not a valid prompt (schema),
- messages that are not an optional system message followed by one user message (schema),
- a message template with a Jinja2 syntax error,
- a variable a message uses but does not declare, and a declared variable no message uses,
- a prompt whose system message is missing or never states the refusal line (warning),
- an example that fails to render (StrictUndefined: a missing variable is an error),
- a rendered example whose tokens plus `params.max_tokens` exceed the model's context.

Token counts use the model's own tokenizer when the caller finds one (llmops/jobs/models.py: `--model`,
else the registry's `production` or `candidate`, else the prepared default base model). Without
any, they use the UTF-8 byte count, an upper bound for a byte-level BPE, and say so in the finding.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2 import meta
from pydantic import ValidationError
from tokenizers import Tokenizer

from llmops.config_files import locate
from llmops.errors import InputError
from llmops.prompts import Prompt, chat_format_of
from llmops.report import Finding


@dataclass
class TokenCounter:
    count: Callable[[str], int]
    context: int
    source: str
    chat: Any = None  # the model's ChatFormat: examples are counted as the model sees them


def _node(text: str, *keys: str | int) -> yaml.Node | None:
    """The YAML node at `keys` (mapping keys or sequence indexes), or None."""
    return locate(yaml.compose(text), keys)[0]


def _value_line(text: str, *keys: str | int) -> int | None:
    """1-based line where the YAML value at `keys` starts."""
    node = _node(text, *keys)
    return None if node is None else node.start_mark.line + 1


def _template_line(text: str, template: str, needle: str, index: int) -> int | None:
    """File line of the first line of message `index`'s content containing `needle`."""
    node = _node(text, "messages", index, "content")
    if node is None:
        return None
    # A block scalar (`|`, `|-`, `>`) starts on the line after its indicator.
    start = node.start_mark.line + 1 + (1 if getattr(node, "style", None) in ("|", ">") else 0)
    for i, line in enumerate(template.splitlines()):
        if needle in line:
            return start + i
    return start


def find_token_counter(folders: list[Path], *, required: bool = False) -> TokenCounter | None:
    """The tokenizer, context length and chat template of the first folder that has them.

    The caller decides which folders (llmops/jobs/models.py: --model, production, candidate, the
    prepared base model). With `required` (the user named the folder), a folder without a tokenizer
    is an error rather than a fallback to the byte count.
    """
    for folder in folders:
        folder = Path(folder)
        if (folder / "tokenizer.json").is_file() and (folder / "config.json").is_file():
            tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
            config = json.loads((folder / "config.json").read_text())
            context = int(config.get("max_position_embeddings") or config.get("n_positions") or 2048)
            return TokenCounter(lambda s, t=tok: len(t.encode(s, add_special_tokens=False).ids), context, str(folder),
                                chat_format_of(folder))
        if required:
            raise InputError("no tokenizer.json/config.json in the model folder", file=str(folder))
    return None


def lint_prompt_file(path: Path, counter: TokenCounter | None, default_context: int = 512) -> list[Finding]:
    path = Path(path)
    where = str(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return [Finding(f"invalid YAML: {getattr(exc, 'problem', exc)}", file=where,
                        line=None if mark is None else mark.line + 1)]
    if not isinstance(data, dict):
        return [Finding("a prompt file must be a YAML mapping", file=where, line=1)]
    try:
        prompt = Prompt(**data)
    except ValidationError as exc:
        out = []
        for err in exc.errors():
            loc = list(err["loc"]) or (["messages"] if "messages" in err["msg"] else [])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            out.append(Finding(msg, file=where, line=_value_line(text, *loc[:2]) or 1,
                               field=".".join(map(str, loc))))
        return out
    findings: list[Finding] = []
    if prompt.id != path.stem:
        findings.append(Finding(f"id {prompt.id!r} differs from the file name {path.stem!r}", file=where,
                                line=_value_line(text, "id"), field="id"))
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    used: set[str] = set()
    declared = set(prompt.variables)
    for i, message in enumerate(prompt.messages):
        field = f"messages[{i}].content"
        try:
            ast = env.parse(message.content)
        except jinja2.TemplateSyntaxError as exc:
            needle = message.content.splitlines()[(exc.lineno or 1) - 1]
            findings.append(Finding(f"template syntax error in the {message.role} message: {exc.message}",
                                    file=where, line=_template_line(text, message.content, needle, i), field=field))
            continue
        names = meta.find_undeclared_variables(ast)
        used |= names
        for name in sorted(names - declared):
            findings.append(Finding(f"variable {name!r} is used in the template but not declared in `variables`",
                                    file=where, line=_template_line(text, message.content, name, i), field=field))
    if any(f.message.startswith("template syntax error") for f in findings):
        return findings
    for name in sorted(declared - used):
        findings.append(Finding(f"variable {name!r} is declared but the template never uses it",
                                file=where, line=_value_line(text, "variables", name),
                                field=f"variables.{name}"))
    if prompt.system is None:
        findings.append(Finding("no system message: the model gets no instructions, and a chat template may "
                                "insert its own default system prompt", file=where,
                                line=_value_line(text, "messages"), field="messages", severity="warning"))
    if not prompt.examples:
        findings.append(Finding("no examples: add at least one so lint can render the template",
                                file=where, line=_value_line(text, "id"), field="examples",
                                severity="warning"))
    for i, example in enumerate(prompt.examples):
        line = _value_line(text, "examples", i)
        try:
            rendered = prompt.render(counter.chat if counter is not None else None, **example)
        except (InputError, jinja2.UndefinedError, TypeError) as exc:
            findings.append(Finding(f"example {i + 1} does not render: {exc}", file=where, line=line,
                                    field=f"examples[{i}]"))
            continue
        if counter is not None:
            tokens, context, how = counter.count(rendered), counter.context, f"tokens ({counter.source})"
        else:
            tokens, context, how = len(rendered.encode("utf-8")), default_context, "UTF-8 bytes (upper bound)"
        if tokens + prompt.params.max_tokens > context:
            # A byte count only bounds the token count from above: without a tokenizer it may fit.
            findings.append(Finding(
                f"example {i + 1} renders to {tokens} {how}; with max_tokens {prompt.params.max_tokens} that is "
                f"{tokens + prompt.params.max_tokens} > the model's context of {context}",
                file=where, line=line, field=f"examples[{i}]",
                severity="error" if counter is not None else "warning"))
    return findings


def lint_prompts(paths: list[Path], counter: TokenCounter | None, default_context: int = 512) -> list[Finding]:
    findings: list[Finding] = []
    for path in paths:
        findings.extend(lint_prompt_file(path, counter, default_context))
    return findings
