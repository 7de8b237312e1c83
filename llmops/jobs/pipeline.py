"""Run a declared pipeline (`pipeline.yaml`): hash each stage's inputs, skip what is unchanged, resume after a failure.

    llmops pipeline main [KEY=VALUE ...]         # the README's main job
    llmops pipeline merge [--force] [--neutral]  # the merge pipeline (.github/workflows/merge.yml)
    llmops pipeline stage STAGE [--neutral] [--expect-hash HASH]   # one stage, as a cluster runs it

pipeline.yaml declares both pipelines (`pipelines: {main, merge}`); this module runs either.

Each stage runs as its own `llmops` process (the command line in pipeline.yaml), so a stage is
exactly what a person would type, and a crash in one cannot leave another half-initialised.
The lock file (`<home>/pipeline/<name>/lock.json`) records, per stage, the hash of
(command, deps' contents, params' values, upstream stages' hashes) of its last successful run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmops.config_files import load_validated_yaml
from llmops.errors import GateFailed, InputError
from llmops.files import atomic_write_json, sha256_file
from llmops.settings import Settings
from training.config import load_config, write_config


class Stage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cmd: str = Field(description="An llmops command line; {out}, {pipeline} and {<stage>} are substituted.")
    deps: list[str] = Field(default_factory=list, description="Files/folders (repo-relative) whose contents it reads.")
    params: list[str] = Field(default_factory=list, description="Keys of training/config.yaml it reads.")
    after: list[str] = Field(default_factory=list, description="Stages whose outputs it reads.")
    report: str | None = Field(None, description="Its report.json (relative to {out}); a failed verdict stops the run.")
    metrics: str | None = Field(None, description="A JSON file of metrics (relative to {out}).")
    gpu: bool = Field(False, description="Needs a GPU on a cluster (the Argo render requests one); the local "
                                         "runner runs every stage on its own machine.")


class PromoteIfBetter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tolerance: float = Field(0.005, ge=0)
    metrics: dict[str, Literal["higher", "lower"]]


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stages: dict[str, Stage]
    promote_if_better: PromoteIfBetter


class PipelinesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pipelines: dict[str, PipelineSpec]


# Names a stage may not take: `{pipeline}` is the pipeline folder and `{config}` the training config in
# stage commands (and "pipeline" is the Argo DAG template's name).
RESERVED = ("pipeline", "config", "out")
DEFAULT_CONFIG = "training/config.yaml"


def load_pipelines(path: Path) -> dict[str, PipelineSpec]:
    """Every pipeline of `path`, each checked: stage names, and `after` naming only stages above."""
    pipelines = load_validated_yaml(Path(path), PipelinesFile).pipelines
    for pipeline_name, spec in pipelines.items():
        seen: list[str] = []
        for name, stage in spec.stages.items():
            where = f"pipelines.{pipeline_name}.stages.{name}"
            if name in RESERVED:
                raise InputError(f"{name!r} is a reserved name, not a stage's", file=str(path), field=where)
            for ref in stage.after:
                if ref not in seen:
                    raise InputError(f"stage {name!r} runs after {ref!r}, which is not declared above it",
                                     file=str(path), field=f"{where}.after")
            seen.append(name)
    return pipelines


def load_pipeline(path: Path, name: str = "merge") -> PipelineSpec:
    pipelines = load_pipelines(path)
    if name not in pipelines:
        raise InputError(f"no pipeline {name!r} (pipelines: {', '.join(pipelines)})", file=str(path),
                         field="pipelines")
    return pipelines[name]


def hash_paths(root: Path, paths: list[str]) -> str:
    digest = hashlib.sha256()
    for rel in sorted(paths):
        target = root / rel
        if not target.exists():
            raise InputError(f"declared dependency {rel!r} does not exist", file="pipeline.yaml", field="deps")
        files = [target] if target.is_file() else sorted(p for p in target.rglob("*") if p.is_file()
                                                             and "__pycache__" not in p.parts)
        for f in files:
            digest.update(f"{f.relative_to(root).as_posix()}\0{sha256_file(f)}\n".encode())
    return digest.hexdigest()


@dataclass
class StageResult:
    name: str
    status: str  # ran | skipped | failed
    seconds: float = 0.0
    note: str = ""


@dataclass
class PipelineRun:
    folder: Path
    results: list[StageResult] = field(default_factory=list)


def stage_hashes(spec: PipelineSpec, root: Path, config: dict[str, Any], *, neutral: bool = False,
                 spec_file: str = "pipeline.yaml") -> dict[str, str]:
    """{stage: sha256 of (command, deps' contents, params' values, upstream stages' hashes)}, in order.

    The lock records it after a stage's successful run; the Argo render uses it as the memoize key.
    """
    hashes: dict[str, str] = {}
    for stage_name, stage in spec.stages.items():
        unknown = [p for p in stage.params if p not in config]
        if unknown:
            raise InputError(f"stage {stage_name!r} reads unknown config keys {unknown}", file=spec_file,
                             field=f"stages.{stage_name}.params")
        material = {"cmd": stage.cmd, "deps": hash_paths(root, stage.deps),
                    "params": {p: config[p] for p in stage.params}, "after": {a: hashes[a] for a in stage.after},
                    "neutral": neutral if stage_name == "register" else None}
        hashes[stage_name] = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()
    return hashes


def stage_argv(spec: PipelineSpec, stage_name: str, folder: Path, config: str = DEFAULT_CONFIG) -> list[str]:
    """The stage's `llmops` arguments, its `{out}`, `{pipeline}`, `{config}` and `{<stage>}` fields filled in
    for the pipeline folder `folder` and the training config file `config`."""
    places = {"pipeline": str(folder), "config": config, **{s: str(folder / s) for s in spec.stages}}
    return spec.stages[stage_name].cmd.format(out=folder / stage_name, **places).split()


def write_spec(folder: Path, name: str, spec: PipelineSpec) -> None:
    """The pipeline the folder's stages ran under (`<folder>/pipeline.json`): `registry register-candidate`
    reads its gates from it, so a folder is judged by the spec it was run with."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "pipeline.json", {"name": name, **spec.model_dump(mode="json")})


def read_spec(folder: Path) -> tuple[str, PipelineSpec]:
    """(the pipeline's name, its spec) as `write_spec` recorded them in `folder`."""
    path = folder / "pipeline.json"
    if not path.is_file():
        raise InputError("not a pipeline folder (no pipeline.json: run `llmops pipeline main|merge`)", file=str(path))
    data = json.loads(path.read_text())
    name = str(data.pop("name", folder.name))
    return name, PipelineSpec.model_validate(data)


def resolve_config(settings: Settings, folder: Path, config_path: Path | None,
                   overrides: tuple[str, ...] = ()) -> tuple[str, dict[str, Any]]:
    """(the `{config}` path for stage commands, the config's values). With overrides, the resolved config
    is written to `<folder>/config.yaml` and stages read that, so every stage sees the same values."""
    path = config_path or settings.root / DEFAULT_CONFIG
    cfg = load_config(path, overrides)
    if overrides:
        folder.mkdir(parents=True, exist_ok=True)
        return str(write_config(cfg, folder / "config.yaml")), cfg.model_dump()
    try:
        shown = str(path.relative_to(settings.root))
    except ValueError:
        shown = str(path)
    return shown, cfg.model_dump()


def run_stage(settings: Settings, spec: PipelineSpec, stage_name: str, folder: Path, *, neutral: bool = False,
              config: str = DEFAULT_CONFIG,
              echo: Callable[[str], None] = print) -> tuple[StageResult, Exception | None]:
    """Run one stage in a fresh `folder/<stage>` (its log in stage.log) as its own `llmops` process.

    Returns its result and, when it failed (non-zero exit or a `fail` verdict), the error to raise:
    InputError for exit 2, GateFailed otherwise.
    """
    stage, out = spec.stages[stage_name], folder / stage_name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    argv = stage_argv(spec, stage_name, folder, config)
    env = {**os.environ, "LLMOPS_ROOT": str(settings.root), "LLMOPS_HOME": str(settings.home)}
    if neutral:
        env["LLMOPS_PROMOTE_NEUTRAL"] = "1"
    echo(f"==> {stage_name}: llmops {' '.join(argv)}")
    start = time.perf_counter()
    with open(out / "stage.log", "w") as log:
        proc = subprocess.run([sys.executable, "-m", "llmops", *argv], cwd=settings.root, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    seconds = round(time.perf_counter() - start, 1)
    verdict = None
    if stage.report and (out / stage.report).is_file():
        verdict = json.loads((out / stage.report).read_text()).get("verdict")
    if proc.returncode != 0 or verdict == "fail":
        tail = (out / "stage.log").read_text(errors="replace").strip().splitlines()[-6:]
        message = "\n    ".join(tail)
        err = InputError if proc.returncode == 2 else GateFailed
        return (StageResult(stage_name, "failed", seconds, f"exit {proc.returncode}"),
                err(f"stage {stage_name!r} failed (exit {proc.returncode}, verdict {verdict}); "
                    f"log {out / 'stage.log'}:\n    {message}"))
    echo(f"    done in {seconds}s" + (f", verdict {verdict}" if verdict else ""))
    return StageResult(stage_name, "ran", seconds), None


def run_pipeline(settings: Settings, name: str = "merge", *, spec_path: Path | None = None, force: bool = False,
                 neutral: bool = False, config_path: Path | None = None, overrides: tuple[str, ...] = (),
                 echo: Callable[[str], None] = print) -> PipelineRun:
    """Run pipeline `name` of `spec_path` (default pipeline.yaml) in `<home>/pipeline/<name>`.

    overrides: key=value on the training config; the resolved config goes to `<folder>/config.yaml`
    and every stage's `{config}` names it (their hashes follow its values).
    """
    spec = load_pipeline(spec_path or settings.root / "pipeline.yaml", name)
    folder = settings.home / "pipeline" / name
    config_arg, config = resolve_config(settings, folder, config_path, overrides)
    hashes = stage_hashes(spec, settings.root, config, neutral=neutral)
    write_spec(folder, name, spec)
    lock_path = folder / "lock.json"
    lock: dict[str, Any] = json.loads(lock_path.read_text()) if lock_path.is_file() else {}
    run = PipelineRun(folder=folder)
    for stage_name in spec.stages:
        if not force and lock.get(stage_name, {}).get("hash") == hashes[stage_name] and (folder / stage_name).is_dir():
            echo(f"==> {stage_name}: unchanged since {lock[stage_name]['finished']}, skipped")
            run.results.append(StageResult(stage_name, "skipped", note="inputs unchanged"))
            continue
        result, failure = run_stage(settings, spec, stage_name, folder, neutral=neutral, config=config_arg, echo=echo)
        run.results.append(result)
        if failure is not None:
            lock.pop(stage_name, None)
            atomic_write_json(lock_path, lock)
            _write_summary(run, spec)
            raise failure
        lock[stage_name] = {"hash": hashes[stage_name], "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                            "seconds": result.seconds}
        atomic_write_json(lock_path, lock)
    _write_summary(run, spec)
    return run


def run_one_stage(settings: Settings, stage_name: str, name: str = "merge", *, neutral: bool = False,
                  expect_hash: str | None = None, spec_path: Path | None = None, config_path: Path | None = None,
                  echo: Callable[[str], None] = print) -> StageResult:
    """Run one stage as `run_pipeline` does, without skipping and without the lock: on a cluster, Argo's
    memoize skips an unchanged stage, and stages that run in parallel must not rewrite one lock file.

    `expect_hash` is the hash the manifest was rendered with (its memoize key): a checkout (an image)
    whose inputs hash otherwise is refused, so a result is never cached under another commit's key.
    """
    spec_file = spec_path or settings.root / "pipeline.yaml"
    spec = load_pipeline(spec_file, name)
    if stage_name not in spec.stages:
        raise InputError(f"no stage {stage_name!r} (stages: {', '.join(spec.stages)})", file=str(spec_file),
                         field=f"pipelines.{name}.stages")
    folder = settings.home / "pipeline" / name
    config_arg, config = resolve_config(settings, folder, config_path)
    if expect_hash is not None:
        actual = stage_hashes(spec, settings.root, config, neutral=neutral)[stage_name]
        if actual != expect_hash:
            raise InputError(f"stage {stage_name!r} hashes to {actual} here, not {expect_hash}: this checkout "
                             "(image) is not the one the manifest was rendered from", field="expect_hash")
    write_spec(folder, name, spec)
    result, failure = run_stage(settings, spec, stage_name, folder, neutral=neutral, config=config_arg, echo=echo)
    # The whole log too: on a cluster, the pod's log is where a person reads it.
    echo((folder / stage_name / "stage.log").read_text(errors="replace").rstrip())
    if failure is not None:
        raise failure
    return result


def _write_summary(run: PipelineRun, spec: PipelineSpec) -> None:
    lines = ["| stage | status | seconds | note |", "|---|---|---|---|"]
    for r in run.results:
        lines.append(f"| {r.name} | {r.status} | {r.seconds} | {r.note} |")
    (run.folder / "summary.md").write_text("\n".join(lines) + "\n")
