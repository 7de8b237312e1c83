"""The merge pipeline (`pipeline.yaml`) as an Argo Workflow, for teams whose GPU jobs run on Kubernetes.

    llmops pipeline merge --render argo-workflows --out build/merge-workflow.yaml --image registry/llmops-worker:<sha>
    argo submit build/merge-workflow.yaml          # or: kubectl create -f build/merge-workflow.yaml
    python -m serving.k8s_validate build/merge-workflow.yaml     # the same schema check, on an edited copy

What it emits: one `Workflow` whose entrypoint is a `dag` template with one task per stage, in the
declared order, `dependencies` = the stage's `after`, and one container template per stage:

- **The command.** Each task runs `llmops pipeline stage <stage> --expect-hash <hash>` in the image:
  the stage's own command line (also in the pod annotation `llmops/command`), run as `pipeline merge`
  runs it (a fresh `<home>/pipeline/merge/<stage>/` folder, its log, the report's verdict). The image is
  the worker image of docker/Dockerfile built from the same commit (`--image`, or `-p image=...` at
  submit time); the CUDA build (`LLMOPS_EXTRAS=gpu`) has every dependency the stages import.
- **Memoisation.** Each stage template has `memoize.key` = the stage's hash exactly as the local runner
  computes it (llmops.jobs.pipeline.stage_hashes: command, deps' contents, params' values, upstream
  hashes), cached in the ConfigMap `llmops-merge-cache` (the controller creates it). So the cluster
  skips a stage whose inputs did not change, as `pipeline merge` does, and a failed run resumes after
  the stages that passed. The hash is taken from the checkout that renders; `--expect-hash` makes a
  pod whose image hashes otherwise fail, so a result is never cached under another commit's key.
  `--force` renders without memoize. The cache and the volume belong together: empty one, empty both.
- **Files between stages: one shared volume**, the PersistentVolumeClaim `llmops-home` mounted at
  the image's LLMOPS_HOME (/var/lib/llmops), so `{train}/run/merged` is the same path for every stage,
  as on one machine. Argo artifacts would need an artifact repository (S3, GCS) configured on the
  cluster and would copy a multi-GB model in and out of each pod; a memoised stage skipped by a later
  run must also find its outputs where it left them, which a per-run volume (volumeClaimTemplates)
  would not keep. Stages after `train` run in parallel, so the claim is ReadWriteMany (or every pod
  lands on one node).
- **GPUs.** A stage declared `gpu: true` in pipeline.yaml (train, export) limits `nvidia.com/gpu: 1`.

Why a `Workflow` and not a `WorkflowTemplate`: the memoize keys are the hashes of one commit's inputs,
so a rendered manifest is one run of that commit, as `llmops pipeline merge` is; a WorkflowTemplate
is a standing definition that runs are later submitted from, and its keys would go stale with the
next commit. `generateName` gives each submission its own name (submit with `argo submit` or
`kubectl create`, not `kubectl apply`).

Every rendered manifest is checked (serving/k8s_validate.py: the Argo Workflows schema vendored under
serving/k8s/schemas/argo-workflows/, each container against Kubernetes' own, the DAG's references)
before anything is written; a problem is an InputError (exit 2) naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from llmops.files import atomic_write_text
from llmops.jobs.pipeline import load_pipeline, stage_argv, stage_hashes
from llmops.settings import Settings
from serving.k8s_validate import ensure_valid
from training.config import load_config

DEFAULT_IMAGE = "llmops-worker:cuda"  # docker/Dockerfile --target worker, LLMOPS_EXTRAS=gpu
CONTAINER_HOME = PurePosixPath("/var/lib/llmops")  # the image's LLMOPS_HOME; the claim is mounted there
CLAIM = "llmops-home"
CACHE_CONFIGMAP = "llmops-merge-cache"
# The local lock never expires; Argo needs an age, so a year stands in for never.
MEMO_MAX_AGE = "8760h"
DAG_TEMPLATE = "pipeline"  # a name no stage may take (load_pipeline reserves it: `{pipeline}` is the pipeline folder in stage commands)
RUN_AS = 10001  # the image's user (docker/Dockerfile); fsGroup makes the claim writable by it


def render_workflow(settings: Settings, *, image: str = DEFAULT_IMAGE, neutral: bool = False,
                    memoize: bool = True, name: str = "merge") -> dict[str, Any]:
    """The Workflow (a plain mapping, in manifest order) for the checkout at `settings.root`."""
    spec = load_pipeline(settings.root / "pipeline.yaml")
    config = load_config(settings.root / "training" / "config.yaml").model_dump()
    hashes = stage_hashes(spec, settings.root, config, neutral=neutral)
    folder = Path(CONTAINER_HOME / "pipeline" / name)
    tasks, templates = [], []
    for stage_name, stage in spec.stages.items():
        tasks.append({"name": stage_name, "template": stage_name,
                      **({"dependencies": list(stage.after)} if stage.after else {})})
        args = ["pipeline", "stage", stage_name, "--expect-hash", hashes[stage_name], *(["--neutral"] * neutral)]
        container: dict[str, Any] = {
            "image": "{{workflow.parameters.image}}", "command": ["llmops"], "args": args,
            "volumeMounts": [{"name": CLAIM, "mountPath": str(CONTAINER_HOME)}]}
        if stage.gpu:
            container["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
        command = " ".join(["llmops", *stage_argv(spec, stage_name, folder)])
        template: dict[str, Any] = {"name": stage_name, "metadata": {"annotations": {"llmops/command": command}}}
        if memoize:
            template["memoize"] = {"key": hashes[stage_name], "maxAge": MEMO_MAX_AGE,
                                   "cache": {"configMap": {"name": CACHE_CONFIGMAP}}}
        template["container"] = container
        templates.append(template)
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"generateName": f"llmops-{name}-",
                     "labels": {"app.kubernetes.io/name": "llmops", "app.kubernetes.io/component": f"{name}-pipeline"}},
        "spec": {
            "entrypoint": DAG_TEMPLATE,
            "arguments": {"parameters": [{"name": "image", "value": image,
                                          "description": "The llmops worker image, built from the rendered commit"}]},
            "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS},
            "volumes": [{"name": CLAIM, "persistentVolumeClaim": {"claimName": CLAIM}}],
            "templates": [{"name": DAG_TEMPLATE, "dag": {"tasks": tasks}}, *templates],
        },
    }


def workflow_yaml(doc: dict[str, Any]) -> str:
    header = ("# Rendered by `llmops pipeline merge --render argo-workflows` from pipeline.yaml; do not edit:\n"
              "# render again (the memoize keys are the stages' content hashes of the rendering checkout).\n")
    return header + yaml.safe_dump(doc, sort_keys=False, width=120)


def checked_workflow(settings: Settings, file: str, *, image: str = DEFAULT_IMAGE, neutral: bool = False,
                     memoize: bool = True) -> str:
    """The rendered YAML, schema-checked first: a problem is an InputError naming `file` and the field."""
    text = workflow_yaml(render_workflow(settings, image=image, neutral=neutral, memoize=memoize))
    ensure_valid({file: text})
    return text


def write_workflow(settings: Settings, out: Path, *, image: str = DEFAULT_IMAGE, neutral: bool = False,
                   memoize: bool = True) -> Path:
    """Render, check, then write `out` atomically (nothing is written when the check fails)."""
    atomic_write_text(out, checked_workflow(settings, str(out), image=image, neutral=neutral, memoize=memoize))
    return out
