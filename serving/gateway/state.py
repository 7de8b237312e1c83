"""What the gateway remembers: per colour the version, worker port and pid, weight and scale-down
time, and which colour is stable and which is the preview.

`<home>/gateway/state.json` is written atomically on every change. A restarted gateway reads it
back: a worker still answering /readyz on its port with the expected model id (`model_id`) is
adopted, a missing one is started again, and the weights are the same as before.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmops.errors import InputError
from llmops.files import atomic_write_json
from llmops.settings import Settings

COLOURS = ("blue", "green")
Colour = Literal["blue", "green"]


def other(colour: str) -> str:
    return "green" if colour == "blue" else "blue"


def gateway_dir(settings: Settings | None = None) -> Path:
    """`<home>/gateway`: state.json, admin.token and the workers' logs."""
    return (settings or Settings.load()).home / "gateway"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class ColourState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str | None = None
    """Registry version served by this colour (None: never loaded)."""
    model_dir: str | None = None
    """The servable folder inside the registry version."""
    backend: str = "onnx"
    port: int | None = None
    pid: int | None = None
    """Worker process id (None: not running)."""
    weight: int = Field(0, ge=0, le=100)
    """% of new requests."""
    fault: str | None = None
    scale_down_at: float | None = None
    """Unix time at which the gateway stops this idle colour's worker (scale-down delay)."""
    loaded_at: str | None = None


class GatewayState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_: int = Field(1, alias="schema")
    stable: Colour | None = None
    preview: Colour | None = None
    colours: dict[Colour, ColourState] = Field(default_factory=lambda: {c: ColourState() for c in COLOURS})
    gateway: dict[str, Any] = Field(default_factory=dict)
    """url and pid of the gateway process that wrote this."""
    updated: str = ""


def state_path(settings: Settings | None = None) -> Path:
    return gateway_dir(settings) / "state.json"


def load_state(path: Path) -> GatewayState:
    if not path.is_file():
        return GatewayState()
    try:
        return GatewayState.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, ValidationError) as exc:
        raise InputError(f"gateway state is unreadable: {exc}", file=str(path)) from exc


def save_state(path: Path, state: GatewayState) -> None:
    state.updated = now_iso()
    atomic_write_json(path, state.model_dump(by_alias=True))


def model_id(colour: str, version: str) -> str:
    """The worker's --model-id: lets a restarted gateway check that a port still serves what it should."""
    return f"llmops-{colour}-v{version}"


def servable(version_files: Path) -> tuple[Path, str]:
    """(folder, backend) of a registry version: files/onnx/fp32 (ONNX), else files/model (torch)."""
    for candidate in (version_files / "onnx" / "fp32", version_files / "onnx"):
        if (candidate / "model.onnx").is_file():
            return candidate, "onnx"
    if (version_files / "model" / "config.json").is_file():
        return version_files / "model", "torch"
    raise InputError("the version has neither onnx/fp32/model.onnx nor model/config.json to serve",
                     file=str(version_files))
