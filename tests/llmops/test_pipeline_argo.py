"""The merge pipeline rendered as an Argo Workflow: its DAG is pipeline.yaml's stages and `after`, its
memoize keys are the stages' hashes as the local runner computes them, it passes the vendored Argo
Workflows schema, and a broken one fails naming the field.

    .venv/bin/pytest tests/llmops/test_pipeline_argo.py -q
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops.cli import main as llmops_main
from llmops.errors import InputError
from llmops.jobs import pipeline_argo
from llmops.jobs.pipeline import load_pipeline, run_one_stage, run_pipeline, stage_hashes
from llmops.jobs.pipeline_argo import render_workflow, workflow_yaml, write_workflow
from llmops.settings import Settings
from serving.k8s_validate import check_document, check_text, ensure_valid
from serving.k8s_validate import main as validate_main
from training.config import load_config

# Stages whose command runs in a tenth of a second (`llmops --version`), to compare with the local runner.
SPEC = """\
pipelines:
  merge:
    stages:
      lint:
        cmd: --version
        deps: [prompts/answer.yaml]
      train:
        cmd: --version
        deps: [notes.txt]
        params: [seed]
        after: [lint]
        gpu: true
      audit:
        cmd: --version
        deps: [other.txt]
    promote_if_better:
      metrics: {dataset.rouge_l: higher}
"""


@pytest.fixture
def repo(tmp_path: Path, repo_root: Path) -> Path:
    root = tmp_path / "repo"
    for rel in ("prompts/answer.yaml", "training/config.yaml"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo_root / rel, root / rel)
    (root / "notes.txt").write_text("train notes\n")
    (root / "other.txt").write_text("other\n")
    (root / "pipeline.yaml").write_text(SPEC)
    return root


@pytest.fixture(scope="module")
def rendered(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The repository's own pipeline, rendered (and schema-checked) as the CLI writes it."""
    out = write_workflow(Settings(root=repo_root, home=tmp_path_factory.mktemp("home")),
                         tmp_path_factory.mktemp("render") / "merge-workflow.yaml")
    return yaml.safe_load(out.read_text(encoding="utf-8"))


def templates(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in doc["spec"]["templates"]}


def keys(doc: dict[str, Any]) -> dict[str, str]:
    return {name: t["memoize"]["key"] for name, t in templates(doc).items() if "memoize" in t}


def test_the_dag_is_the_pipeline_with_its_dependencies_commands_and_gpus(rendered: dict[str, Any],
                                                                         repo_root: Path) -> None:
    spec = load_pipeline(repo_root / "pipeline.yaml")
    assert check_document(rendered) == []
    assert rendered["kind"] == "Workflow" and rendered["metadata"]["generateName"] == "llmops-merge-"
    by_name = templates(rendered)
    dag = by_name[rendered["spec"]["entrypoint"]]["dag"]["tasks"]
    assert [t["name"] for t in dag] == list(spec.stages)
    assert {t["name"]: t.get("dependencies", []) for t in dag} == {n: s.after for n, s in spec.stages.items()}
    assert all(t["template"] == t["name"] for t in dag)

    config = load_config(repo_root / "training" / "config.yaml").model_dump()
    hashes = stage_hashes(spec, repo_root, config)
    assert keys(rendered) == hashes
    folder = "/var/lib/llmops/pipeline/merge"
    for name, stage in spec.stages.items():
        template = by_name[name]
        assert template["memoize"]["cache"] == {"configMap": {"name": "llmops-merge-cache"}}
        container = template["container"]
        assert container["image"] == "{{workflow.parameters.image}}"
        assert container["command"] == ["llmops"]
        assert container["args"] == ["pipeline", "stage", name, "--expect-hash", hashes[name]]
        assert container["volumeMounts"] == [{"name": "llmops-home", "mountPath": "/var/lib/llmops"}]
        # The same command line as the local runner's, in the image's LLMOPS_HOME.
        places = {"pipeline": folder, "config": "training/config.yaml", **{s: f"{folder}/{s}" for s in spec.stages}}
        assert template["metadata"]["annotations"]["llmops/command"] == "llmops " + stage.cmd.format(
            out=f"{folder}/{name}", **places)
        gpus = container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
        assert gpus == ("1" if stage.gpu else None), name
    assert {n for n, s in spec.stages.items() if s.gpu} == {"train", "leakage-train", "export"}
    (image,) = rendered["spec"]["arguments"]["parameters"]
    assert image == {"name": "image", "value": "llmops-worker:cuda", "description": image["description"]}
    assert rendered["spec"]["volumes"] == [{"name": "llmops-home",
                                            "persistentVolumeClaim": {"claimName": "llmops-home"}}]


def test_the_memoize_key_is_the_local_hash_and_changes_only_with_the_stages_inputs(repo: Path,
                                                                                    tmp_path: Path) -> None:
    settings = Settings(root=repo, home=tmp_path / "home")
    first = keys(render_workflow(settings))
    assert keys(render_workflow(settings)) == first, "a render is reproducible"

    # The local runner records the very same hashes in its lock.
    run_pipeline(settings, echo=lambda _: None)
    lock = json.loads((settings.home / "pipeline" / "merge" / "lock.json").read_text())
    assert {name: entry["hash"] for name, entry in lock.items()} == first

    (repo / "prompts" / "answer.yaml").write_text((repo / "prompts" / "answer.yaml").read_text() + "\n# edited\n")
    changed = keys(render_workflow(settings))
    assert {n for n in first if changed[n] != first[n]} == {"lint", "train"}  # train is after lint

    config = repo / "training" / "config.yaml"
    text = config.read_text()
    assert "\nseed: " in text
    config.write_text(text.replace("\nseed: ", "\nseed: 1", 1))  # seed 42 -> 142, say: another value
    reseeded = keys(render_workflow(settings))
    assert {n for n in first if reseeded[n] != changed[n]} == {"train"}

    (repo / "other.txt").write_text("other, edited\n")
    assert {n for n, k in keys(render_workflow(settings)).items() if k != reseeded[n]} == {"audit"}

    assert "memoize" not in json.dumps(render_workflow(settings, memoize=False))  # --force


def test_a_stage_runs_only_in_the_checkout_it_was_rendered_from(repo: Path, tmp_path: Path) -> None:
    settings = Settings(root=repo, home=tmp_path / "home")
    key = keys(render_workflow(settings))["audit"]
    result = run_one_stage(settings, "audit", expect_hash=key, echo=lambda _: None)
    assert result.status == "ran" and (settings.home / "pipeline" / "merge" / "audit" / "stage.log").is_file()
    (repo / "other.txt").write_text("another commit\n")
    with pytest.raises(InputError, match="not the one the manifest was rendered from") as err:
        run_one_stage(settings, "audit", expect_hash=key, echo=lambda _: None)
    assert err.value.field == "expect_hash"
    with pytest.raises(InputError, match="no stage 'trian'"):
        run_one_stage(settings, "trian", echo=lambda _: None)
    (repo / "pipeline.yaml").write_text(SPEC.replace("  audit:", "  pipeline:"))  # the DAG template's name
    with pytest.raises(InputError, match="reserved") as err:
        render_workflow(settings)
    assert err.value.field == "pipelines.merge.stages.pipeline"


def _task(name: str) -> Any:
    def locate(doc: dict[str, Any]) -> dict[str, Any]:
        return next(t for t in doc["spec"]["templates"][0]["dag"]["tasks"] if t["name"] == name)
    return locate


def _template(name: str) -> Any:
    return lambda doc: templates(doc)[name]


# (what to break, how, the field named, words of the message); tasks: 0 data-check, 1 tokenise, 2 train;
# templates: 0 the DAG, 1 data-check, 2 tokenise, 3 train.
BROKEN = [
    ("a task depends on a missing task", lambda d: _task("train")(d).update(dependencies=["tokenize"]),
     "spec.templates[0].dag.tasks[2].dependencies[0]", "names no task of this DAG ('tokenize')"),
    ("a task runs a missing template", lambda d: _task("train")(d).update(template="trian"),
     "spec.templates[0].dag.tasks[2].template", "names no template"),
    ("a dependency cycle", lambda d: _task("tokenise")(d).update(dependencies=["train"]),
     "spec.templates[0].dag.tasks[1].dependencies", "dependency cycle: tokenise -> train -> tokenise"),
    ("a second task of one name", lambda d: _task("tokenise")(d).update(name="data-check"),
     "spec.templates[0].dag.tasks[1].name", "a second task named 'data-check'"),
    ("the entrypoint names no template", lambda d: d["spec"].update(entrypoint="main"),
     "spec.entrypoint", "names no template"),
    ("a wrong field type", lambda d: _template("train")(d)["memoize"].update(maxAge=3600),
     "spec.templates[3].memoize.maxAge", "is not of type 'string'"),
    ("a misspelled field", lambda d: _template("train")(d)["memoize"].update(kye="x"),
     "spec.templates[3].memoize.kye", "unknown field"),
    ("a missing required field", lambda d: _template("train")(d)["memoize"].pop("cache"),
     "spec.templates[3].memoize.cache", "required field is missing"),
    ("a misspelled container field",
     lambda d: _template("train")(d)["container"]["volumeMounts"][0].update(mountpath="/x"),
     "spec.templates[3].container.volumeMounts[0].mountpath", "unknown field"),
    # Argo v4.0.5's schema has it; Kubernetes 1.30, the oldest cluster the renders target, does not (1.33).
    ("a container field newer than the oldest cluster",
     lambda d: _template("train")(d)["container"].update(lifecycle={"stopSignal": "SIGTERM"}),
     "spec.templates[3].container.lifecycle.stopSignal", "unknown field"),
    ("args that are not a list", lambda d: _template("train")(d)["container"].update(args="pipeline stage train"),
     "spec.templates[3].container.args", "is not of type 'array'"),
]


@pytest.mark.parametrize(("edit", "field", "message"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_a_broken_workflow_fails_naming_the_field(rendered: dict[str, Any], edit: Any, field: str,
                                                  message: str, tmp_path: Path, capsys) -> None:
    doc = copy.deepcopy(rendered)
    edit(doc)
    text = workflow_yaml(doc)
    named = {p.path: p.message for p in check_text(text, "merge-workflow.yaml")}
    assert field in named, f"expected a problem at {field}, got {named}"
    assert message in named[field]
    with pytest.raises(InputError) as err:
        ensure_valid({"merge-workflow.yaml": text})
    assert "merge-workflow.yaml" in str(err.value) and field in str(err.value)
    # The validate command, on a file a person edited: exit 2, the file and the field.
    path = tmp_path / "merge-workflow.yaml"
    path.write_text(text)
    assert validate_main([str(path)]) == 2
    assert str(path) in capsys.readouterr().err


def test_the_cli_renders_validates_and_writes_atomically(repo: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("LLMOPS_ROOT", str(repo))
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path / "home"))
    out = tmp_path / "build" / "merge-workflow.yaml"
    assert llmops_main(["pipeline", "merge", "--render", "argo-workflows", "--out", str(out),
                        "--image", "registry.example.com/llmops-worker:abc123"]) == 0
    doc = yaml.safe_load(out.read_text())
    assert doc["spec"]["arguments"]["parameters"][0]["value"] == "registry.example.com/llmops-worker:abc123"
    assert [t["name"] for t in doc["spec"]["templates"][0]["dag"]["tasks"]] == ["lint", "train", "audit"]
    assert validate_main([str(out)]) == 0
    assert not (tmp_path / "home" / "pipeline").exists(), "rendering runs nothing"
    assert list(out.parent.iterdir()) == [out], "no temp file is left"
    capsys.readouterr()
    assert llmops_main(["pipeline", "merge", "--render", "argo-workflows", "--neutral"]) == 0  # to stdout
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["spec"]["templates"][2]["container"]["args"][-1] == "--neutral"

    # A render that would not validate writes nothing and exits 2 naming the file and the field.
    real = pipeline_argo.render_workflow

    def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        doc = real(*args, **kwargs)
        doc["spec"]["templates"][0]["dag"]["tasks"][1]["dependencies"] = ["lnit"]
        return doc

    monkeypatch.setattr(pipeline_argo, "render_workflow", broken)
    other = tmp_path / "other.yaml"
    assert llmops_main(["pipeline", "merge", "--render", "argo-workflows", "--out", str(other)]) == 2
    err = capsys.readouterr().err
    assert str(other) in err and "spec.templates[0].dag.tasks[1].dependencies[0]" in err and "'lnit'" in err
    assert not other.exists()
    assert llmops_main(["pipeline", "merge", "--out", str(other)]) == 2  # --out without --render
