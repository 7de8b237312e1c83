"""The load-test SLOs and run bounds (`loadtests/slo.yaml`), validated in one place.

    .venv/bin/python -c "from loadtests.slo import load_slo; print(load_slo('loadtests/slo.yaml'))"

An unknown key, a wrong type or an out-of-range value is an InputError that names the file and
the dotted field (e.g. `loadtests/slo.yaml [slo.p99_latency_ms]: unknown key`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llmops.config_files import load_validated_yaml
from llmops.errors import InputError

# Hard ceilings on what any SLO file or flag may ask for: the load test must stay bounded on a
# shared 2-core box (and on a CI runner) whatever a config says.
MAX_USERS = 64
MAX_DURATION_S = 600.0

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any, field: str = "duration") -> float:
    """'20s', '1.5m', '500ms', '20' or a number -> seconds (float). Raises ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{field}: expected a duration like '20s', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{field}: expected a duration like '20s', '1m' or '500ms', got {value!r}")
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not 0 < seconds <= MAX_DURATION_S:
        raise ValueError(f"{field}: {seconds:g} s is outside (0, {MAX_DURATION_S:g}] s")
    return seconds


class Objectives(BaseModel):
    """What must hold for the gate to pass. Latencies in milliseconds, rates per second."""

    model_config = ConfigDict(extra="forbid")

    p95_latency_ms: float = Field(gt=0)
    """95th percentile of the full response time of successful non-streaming chat completions (ms)."""
    ttft_p95_ms: float = Field(gt=0)
    """95th percentile of time to first token of streaming chat completions (ms)."""
    max_error_rate: float = Field(ge=0, le=1)
    """Failed requests / all requests, as a fraction (0.01 = 1 %)."""
    min_requests_per_s: float = Field(ge=0)
    """Successful HTTP requests per second over the run, both tasks together."""
    min_tokens_per_s: float = Field(ge=0)
    """Median output rate of a streaming completion: completion tokens / (end - request start), per second."""


class RunBounds(BaseModel):
    """How hard and how long to push. The CLI's --users/--duration override these."""

    model_config = ConfigDict(extra="forbid")

    users: int = Field(ge=1, le=MAX_USERS)
    spawn_rate: float = Field(gt=0, le=MAX_USERS)
    duration: float
    """Seconds of load after the spawn starts; written as '20s', '1m' or a number of seconds."""
    max_tokens: int = Field(ge=1, le=512)
    chat_weight: int = Field(ge=0)
    stream_weight: int = Field(ge=0)
    think_time_s: float = Field(ge=0, le=60)
    """Each user waits uniform(0, think_time_s) seconds between requests."""

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @model_validator(mode="after")
    def _some_task(self) -> RunBounds:
        if self.chat_weight + self.stream_weight == 0:
            raise ValueError("chat_weight and stream_weight are both 0: no task would run")
        return self


class SLOConfig(BaseModel):
    """The whole file: `slo:` (objectives) and `run:` (bounds of the load)."""

    model_config = ConfigDict(extra="forbid")

    slo: Objectives
    run: RunBounds


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(root)"


def validate_slo(data: Any, source: str = "<slo>") -> SLOConfig:
    """Validate a parsed mapping; InputError names `source` and the first bad field."""
    if not isinstance(data, dict):
        raise InputError(f"expected a mapping with 'slo' and 'run', got {type(data).__name__}", file=source)
    try:
        return SLOConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = _dotted(err["loc"])
        message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise InputError(f"{message}{more}", file=source, field=field) from None


def load_slo(path: str | Path) -> SLOConfig:
    """Read and validate an SLO YAML file (errors name the file, line and key)."""
    return load_validated_yaml(Path(path), SLOConfig)
