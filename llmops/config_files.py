"""Typed YAML config files: read, validate with pydantic, and report problems by file, line and key.

Every config of the project (policy, licences, rollout, drift, SLOs, the pipeline declaration)
goes through `load_validated_yaml`, so an unknown key or a bad value always reads the same way:
`path:line [dotted.key]: message`, exit code 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from llmops.errors import InputError

M = TypeVar("M", bound=BaseModel)


def locate(node: yaml.Node | None, loc: Sequence[Any]) -> tuple[yaml.Node | None, int | None]:
    """Walk `loc` (mapping keys and sequence indexes, e.g. a pydantic error location) down a composed
    YAML tree: (the node at `loc`, or None where the path breaks off; the 1-based line of the deepest
    key or item reached, the nearest parent's when the path breaks off). The one line lookup that
    config files, case files and prompt files share."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if match is None:
                return None, line
            node, line = match[1], match[0].start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return None, line
    return node, line


def yaml_line(text: str, loc: Sequence[Any]) -> int | None:
    """1-based line of the deepest node along `loc` in YAML `text` (None if the text does not parse)."""
    try:
        return locate(yaml.compose(text), loc)[1]
    except yaml.YAMLError:
        return None


def load_validated_yaml(path: Path, model: type[M]) -> M:
    """Read YAML `path` into pydantic `model`; any problem is an InputError naming file, line and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", file=str(path)) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"invalid YAML: {getattr(exc, 'problem', exc)}", file=str(path),
                         line=mark.line + 1 if mark is not None else None) from exc
    if not isinstance(data, dict):
        raise InputError("must be a YAML mapping", file=str(path), line=1)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        # pydantic reports the field alias ("schema"), which is also the YAML key.
        # pydantic marks a bad dict key with a trailing "[key]" step; the key itself is the step before.
        loc = tuple(p for p in err["loc"] if p != "[key]")
        key = ".".join(str(p) for p in loc)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = f"unknown key {str(loc[-1])!r}"
        elif err["type"] == "literal_error":
            what = "key" if err["loc"][-1] == "[key]" else "value"
            message = f"unknown {what} {err['input']!r}; expected one of {err['ctx']['expected']}"
        more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise InputError(message + more, file=str(path), line=yaml_line(text, loc), field=key) from exc
