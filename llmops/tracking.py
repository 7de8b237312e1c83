"""Training runs on a shared MLflow tracking server, when `LLMOPS_REGISTRY_URI` is set.

    LLMOPS_REGISTRY_URI=http://127.0.0.1:5000 llmops train

training/finetune.py calls `check_tracking(settings)` before it trains, so an unreachable server
fails in seconds rather than after the training, and `log_training_run(...)` once the run folder
is complete: the resolved config as params, every logged step's loss (and learning rate, gradient
norm, eval loss) as metrics at that step, the final metrics, and the loss curve, log history,
metrics and config as artifacts. The run's id goes to the run folder's `mlflow_run.json`; the
registration reads it back (`training_run_ref`) into the lineage, so the model version's files,
lineage and gate reports land in the same MLflow run (llmops/registry_mlflow.py).
Without the setting every function here is a no-op and mlflow is not imported.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops.errors import InputError
from llmops.lineage import git_info

if TYPE_CHECKING:
    from llmops.settings import Settings

RUN_FILE = "mlflow_run.json"  # {"tracking_uri", "experiment_id", "run_id"} in a training run folder
ARTIFACTS = ("loss_curve.png", "log_history.json", "metrics.json", "config.yaml")
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
BATCH = 100  # params per log_batch call (MLflow's limit; metrics allow 1,000)


def check_server(uri: str, timeout: float = 5.0) -> None:
    """GET <uri>/health; an unreachable or unhealthy server is an InputError (exit 2) that says what to do."""
    import httpx

    hint = "start it (mlflow server ...) or unset LLMOPS_REGISTRY_URI to use the local registry folder"
    try:
        response = httpx.get(f"{uri}/health", timeout=timeout)
    except httpx.HTTPError as exc:
        raise InputError(f"the MLflow server at {uri} is unreachable ({type(exc).__name__}: {exc}); {hint}",
                         field="registry_uri") from None
    if response.status_code != 200:
        raise InputError(f"the MLflow server at {uri} answered /health with HTTP {response.status_code}; {hint}",
                         field="registry_uri")


def client(uri: str) -> Any:
    """An MlflowClient for tracking and the model registry on the same server (checked reachable first)."""
    check_server(uri)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(mlflow: Any, name: str) -> str:
    """The id of experiment `name`, created when missing (a concurrent creation is not an error)."""
    from mlflow.exceptions import MlflowException

    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(mlflow.create_experiment(name))
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return str(mlflow.get_experiment_by_name(name).experiment_id)


def check_tracking(settings: Settings) -> bool:
    """True when training runs are tracked; raises InputError when the configured server is unreachable."""
    if not settings.registry_uri:
        return False
    check_server(settings.registry_uri)
    return True


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"a.b": "value"} for nested mappings; lists and scalars as JSON text, cut to MLflow's limit."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}".lstrip("_")
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[name] = text[:MAX_PARAM_CHARS]
    return out


def step_metrics(log_history: Iterable[Mapping[str, Any]]) -> list[tuple[str, float, int]]:
    """(name, value, step) of every numeric entry of the Trainer's log history, except step and epoch."""
    out = []
    for entry in log_history:
        step = int(entry.get("step", 0))
        for name, value in entry.items():
            if name not in ("step", "epoch") and isinstance(value, int | float) and not isinstance(value, bool):
                out.append((name, float(value), step))
    return out


def log_training_run(settings: Settings, run_dir: Path, *, name: str, config: Mapping[str, Any],
                     log_history: list[dict[str, Any]], metrics: Mapping[str, Any]) -> dict[str, str] | None:
    """Log one finished training run (see the module doc); write and return its `mlflow_run.json` record."""
    if not settings.registry_uri:
        return None
    import time

    from mlflow.entities import Metric, Param

    mlflow = client(settings.registry_uri)
    exp = experiment_id(mlflow, settings.registry_model)
    git = git_info(settings.root)
    tags = {"llmops.kind": "train", **({"mlflow.source.git.commit": git["sha"]} if git.get("sha") else {})}
    run = mlflow.create_run(exp, run_name=name, tags=tags)
    run_id = run.info.run_id
    try:
        params = [Param(k, v) for k, v in flatten(config).items()]
        for i in range(0, len(params), BATCH):
            mlflow.log_batch(run_id, params=params[i:i + BATCH])
        now = int(time.time() * 1000)
        history = step_metrics(log_history)
        last_step = max((step for _, _, step in history), default=0)
        history += [(k, float(v), last_step) for k, v in metrics.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)]
        points = [Metric(k, v if math.isfinite(v) else float("nan"), now, step) for k, v, step in history]
        for i in range(0, len(points), 1000):
            mlflow.log_batch(run_id, metrics=points[i:i + 1000])
        for artifact in ARTIFACTS:
            if (run_dir / artifact).is_file():
                mlflow.log_artifact(run_id, str(run_dir / artifact))
    except BaseException:
        finish(mlflow, run_id, "FAILED")
        raise
    finish(mlflow, run_id, "FINISHED")
    record = {"tracking_uri": settings.registry_uri, "experiment_id": exp, "run_id": run_id}
    (run_dir / RUN_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def finish(mlflow: Any, run_id: str, status: str) -> None:
    """End a run; MLflow prints the run's URL to stdout, which goes to stderr here (stdout is the command's)."""
    import contextlib
    import sys

    with contextlib.redirect_stdout(sys.stderr):
        mlflow.set_terminated(run_id, status)


def training_run_ref(run_dir: Path) -> dict[str, str] | None:
    """The MLflow run a training run folder was logged as (None: not tracked)."""
    path = Path(run_dir) / RUN_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
