"""Every rendered manifest against its published schema, offline: core kinds with the schemas that
`kubernetes-validate` bundles, Rollout and AnalysisTemplate with the Argo Rollouts CRDs' schemas
vendored from `@kubernetes-models/argo-rollouts`. A misspelled field or a wrong type fails, naming
the field's path; the render refuses to write such a manifest and the CLI exits 2.

    .venv/bin/pytest tests/serving/test_k8s_validate.py -q
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

import serving.k8s_render as k8s_render
from llmops.errors import InputError
from serving.k8s_render import DEPLOYMENT_MANIFESTS, MANIFESTS, load_values, render_manifests
from serving.k8s_validate import (
    ARGO_SCHEMAS,
    ARGO_WORKFLOWS_SCHEMAS,
    KUBERNETES_VERSION,
    check_document,
    check_text,
    check_texts,
    ensure_valid,
    strict_crd_schema,
    validate_paths,
)

ROLLOUT_YAML = Path(__file__).resolve().parents[2] / "serving" / "rollout.yaml"
VERSION = "v1.3.0-rc.1"
IMAGE = "registry.example.com/llmops/serving:v1.3.0-rc.1"
NEWEST = "1.37"


def _render(out: Path, workload: str = "rollout", validate: bool = False) -> dict[str, str]:
    values = load_values().model_copy(update={"workload": workload})
    paths = render_manifests(VERSION, IMAGE, out, ROLLOUT_YAML, values=values, validate=validate)
    return {p.name: p.read_text(encoding="utf-8") for p in paths}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _render(tmp_path_factory.mktemp("k8s"))


@pytest.fixture(scope="module")
def rendered_deployment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _render(tmp_path_factory.mktemp("k8s-deployment"), workload="deployment")


def _docs(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


# ------------------------------------------------------------------------------------- valid renders

@pytest.mark.parametrize("version", [KUBERNETES_VERSION, NEWEST])
def test_every_rendered_manifest_passes_its_schema(rendered, rendered_deployment, version: str) -> None:
    assert list(rendered) == list(MANIFESTS) and list(rendered_deployment) == list(DEPLOYMENT_MANIFESTS)
    kinds = {doc["kind"] for texts in (rendered, rendered_deployment) for text in texts.values() for doc in _docs(text)}
    # Every kind the render emits is one the validator has a schema for (none is skipped).
    assert kinds == {"Rollout", "AnalysisTemplate", "Service", "Deployment"}
    assert check_texts(rendered, version) == []
    assert check_texts(rendered_deployment, version) == []


def test_the_default_render_validates_what_it_writes(tmp_path: Path) -> None:
    texts = _render(tmp_path, validate=True)
    assert set(texts) == set(MANIFESTS)


def test_the_deployment_is_the_rollouts_pod(rendered, rendered_deployment) -> None:
    (rollout,) = _docs(rendered["rollout.yaml"])
    (deployment,) = _docs(rendered_deployment["deployment.yaml"])
    assert deployment["spec"]["template"] == rollout["spec"]["template"]
    assert deployment["spec"]["selector"] == rollout["spec"]["selector"]
    services = _docs(rendered_deployment["services.yaml"])
    assert [s["metadata"]["name"] for s in services] == ["llmops-active"]
    assert services[0]["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == load_values().run_as_user


# ------------------------------------------------------------------------------------- broken manifests

def _set(path: list, value) -> Callable[[dict], None]:
    def edit(doc: dict) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


def _rename(path: list, new: str) -> Callable[[dict], None]:
    def edit(doc: dict) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[new] = node.pop(path[-1])
    return edit


CONTAINER = ["spec", "template", "spec", "containers", 0]
PROBE_JOB = ["spec", "metrics", 0, "provider", "job"]

BROKEN = [
    # (file, document index, edit, field path named, message)
    ("rollout.yaml", 0, _rename(["spec", "replicas"], "replcas"), "spec.replcas", "unknown field"),
    ("rollout.yaml", 0, _set(["spec", "replicas"], "two"), "spec.replicas", "is not of type 'integer'"),
    ("rollout.yaml", 0, _rename(["metadata", "labels"], "labelz"), "metadata.labelz", "unknown field"),
    ("rollout.yaml", 0, _rename(["spec", "strategy", "blueGreen", "previewService"], "previewServise"),
     "spec.strategy.blueGreen.previewServise", "unknown field"),
    ("rollout.yaml", 0, _set(["spec", "strategy", "blueGreen", "autoPromotionEnabled"], "yes"),
     "spec.strategy.blueGreen.autoPromotionEnabled", "is not of type 'boolean'"),
    ("rollout.yaml", 0, _rename([*CONTAINER, "command"], "comand"), "spec.template.spec.containers[0].comand",
     "unknown field"),
    ("rollout.yaml", 0, _set([*CONTAINER, "ports", 0, "containerPort"], "8000"),
     "spec.template.spec.containers[0].ports[0].containerPort", "is not of type 'integer'"),
    # Open in the CRD (x-kubernetes-preserve-unknown-fields), so only the core PodTemplate check sees it.
    ("rollout.yaml", 0, _rename(["spec", "template", "spec", "volumes", 0, "persistentVolumeClaim"], "persistentVolumeClam"),
     "spec.template.spec.volumes[0].persistentVolumeClam", "unknown field"),
    ("rollout.yaml", 0, _set([*CONTAINER, "resources", "limits"], ["2"]),
     "spec.template.spec.containers[0].resources.limits", "is not of type 'object'"),
    ("services.yaml", 0, _set(["spec", "ports", 0, "port"], "8000"), "spec.ports[0].port", "is not of type 'integer'"),
    ("services.yaml", 1, _rename(["spec", "selector"], "selectr"), "spec.selectr", "unknown field"),
    ("analysis-metrics.yaml", 0, _rename(["spec", "metrics", 1, "provider", "prometheus", "query"], "querry"),
     "spec.metrics[1].provider.prometheus.querry", "unknown field"),
    ("analysis-metrics.yaml", 0, _set(["spec", "metrics", 0, "interval"], 5), "spec.metrics[0].interval",
     "is not of type 'string'"),
    ("analysis-probes.yaml", 0, _set([*PROBE_JOB, "spec", "backoffLimit"], "0"),
     "spec.metrics[0].provider.job.spec.backoffLimit", "is not of type 'integer'"),
    ("analysis-probes.yaml", 0, _rename([*PROBE_JOB, "spec", "template", "spec", "restartPolicy"], "restartPolcy"),
     "spec.metrics[0].provider.job.spec.template.spec.restartPolcy", "unknown field"),
    ("analysis-probes.yaml", 0, _set([*PROBE_JOB, "spec", "template", "spec", "containers", 0, "env", 0, "valueFrom",
                                      "secretKeyRef", "optional"], "yes"),
     "spec.metrics[0].provider.job.spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef.optional",
     "is not of type 'boolean'"),
    ("deployment.yaml", 0, _rename(["spec", "strategy", "rollingUpdate", "maxSurge"], "maxSurg"),
     "spec.strategy.rollingUpdate.maxSurg", "unknown field"),
    ("deployment.yaml", 0, _set(["spec", "replicas"], "2"), "spec.replicas", "is not of type 'integer'"),
    ("deployment.yaml", 0, _set(["apiVersion"], "apps/v2"), "kind", "no schema for kind 'Deployment'"),
    ("rollout.yaml", 0, _set(["kind"], "Rolout"), "kind", "no schema for kind 'Rolout'"),
]


@pytest.mark.parametrize(("file", "index", "edit", "field", "message"), BROKEN,
                         ids=[f"{f}:{field}" for f, _, _, field, _ in BROKEN])
def test_a_broken_manifest_fails_naming_the_field(rendered, rendered_deployment, file, index, edit, field,
                                                  message) -> None:
    texts = rendered_deployment if file == "deployment.yaml" else rendered
    docs = _docs(texts[file])
    edit(docs[index])
    text = yaml.safe_dump_all(docs, sort_keys=False)
    problems = check_text(text, file)
    assert problems, f"{field}: the broken manifest passed"
    named = {p.path: p.message for p in problems}
    assert field in named, f"expected a problem at {field}, got {[str(p) for p in problems]}"
    assert message in named[field]
    # Only the broken document is reported, and nothing else in it (a required field renamed away
    # would add its own line; none of these edits does).
    assert {p.document for p in problems} == {f"{docs[index]['kind']}/{docs[index]['metadata']['name']}"}
    with pytest.raises(InputError) as err:
        ensure_valid({**texts, file: text})
    assert field in str(err.value) and file in str(err.value)


def test_a_missing_required_field_is_named(rendered) -> None:
    (rollout,) = _docs(rendered["rollout.yaml"])
    del rollout["spec"]["strategy"]["blueGreen"]["activeService"]
    assert ("spec.strategy.blueGreen.activeService", "required field is missing") in check_document(rollout)
    (service, _) = _docs(rendered["services.yaml"])
    del service["kind"]
    assert check_document(service) == [("kind", "required field is missing")]


def test_a_field_newer_than_the_oldest_supported_cluster_is_refused(rendered_deployment) -> None:
    # Pod-level resources are in the 1.32 API, not in 1.30, the oldest cluster the render targets.
    (deployment,) = _docs(rendered_deployment["deployment.yaml"])
    deployment["spec"]["template"]["spec"]["resources"] = {"limits": {"cpu": "2"}}
    assert [path for path, _ in check_document(deployment, "1.30")] == ["spec.template.spec.resources"]
    assert check_document(deployment, NEWEST) == []


def test_an_unknown_kubernetes_version_is_an_input_error(rendered) -> None:
    for version in ("1.4", "2.0", "latest"):
        with pytest.raises(InputError) as err:
            check_texts(rendered, version)
        assert err.value.field == "kubernetes_version"


# ------------------------------------------------------------------------------------- the render and the CLI

def _broken_templates(tmp_path: Path) -> Path:
    templates = tmp_path / "templates"
    shutil.copytree(k8s_render.TEMPLATES_DIR, templates)
    rollout = templates / "rollout.yaml.j2"
    text = rollout.read_text(encoding="utf-8")
    assert "  replicas: [[ values.replicas ]]" in text
    rollout.write_text(text.replace("  replicas: [[ values.replicas ]]", "  replcas: [[ values.replicas ]]"), encoding="utf-8")
    return templates


def test_the_render_refuses_an_invalid_manifest_and_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(k8s_render, "TEMPLATES_DIR", _broken_templates(tmp_path))
    out = tmp_path / "out"
    with pytest.raises(InputError) as err:
        render_manifests(VERSION, IMAGE, out, ROLLOUT_YAML)
    assert err.value.field == "spec.replcas"
    assert "rollout.yaml" in str(err.value) and "Rollout/llmops" in str(err.value)
    assert not out.exists(), "nothing may be written for an invalid manifest"


def test_llmops_release_render_exits_2_naming_the_field(tmp_path: Path, monkeypatch, repo_root: Path, capsys) -> None:
    from llmops.cli import main

    monkeypatch.setenv("LLMOPS_ROOT", str(repo_root))
    assert main(["release", "v2.0.0", "--target", "kubernetes", "--render", str(tmp_path / "ok")]) == 0
    assert validate_paths([tmp_path / "ok"]) == sorted((tmp_path / "ok").glob("*.yaml"))
    monkeypatch.setattr(k8s_render, "TEMPLATES_DIR", _broken_templates(tmp_path))
    capsys.readouterr()
    assert main(["release", "v2.0.0", "--target", "kubernetes", "--render", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "spec.replcas" in err and "unknown field" in err
    assert not (tmp_path / "bad").exists()


def test_the_validate_command_checks_files_a_user_edited(tmp_path: Path, rendered) -> None:
    for name, text in rendered.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    command = [sys.executable, "-m", "serving.k8s_validate", str(tmp_path)]
    ok = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("valid: ") == len(rendered)
    rollout = tmp_path / "rollout.yaml"
    rollout.write_text(rollout.read_text(encoding="utf-8").replace("  replicas: ", "  replcas: ", 1), encoding="utf-8")
    bad = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert f"{rollout}: Rollout/llmops: spec.replcas: unknown field" in bad.stderr


# ------------------------------------------------------------------------------------- the vendored schemas

def test_the_vendored_argo_schemas_are_the_published_ones() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("extract_argo_rollouts", ARGO_SCHEMAS.parent / "extract_argo_rollouts.py")
    extractor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extractor)
    schema_bytes = extractor.schema_bytes
    source = json.loads((ARGO_SCHEMAS / "SOURCE.json").read_text(encoding="utf-8"))
    assert source["package"] == "@kubernetes-models/argo-rollouts" and source["license"] == "MIT"
    assert "Tommy Chen" in (ARGO_SCHEMAS / "LICENSE").read_text(encoding="utf-8")
    for name, entry in source["files"].items():
        data = (ARGO_SCHEMAS / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"{name} differs from what was extracted"
        if name.endswith(".json"):
            # Byte for byte the extractor's output: no hand edit, not even of the layout.
            assert schema_bytes(json.loads(data)) == data
    assert {e.get("kind") for e in source["files"].values()} >= {"Rollout", "AnalysisTemplate"}


def test_the_vendored_argo_workflows_schema_is_the_extracted_one() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("extract_argo_workflows",
                                                  ARGO_WORKFLOWS_SCHEMAS.parent / "extract_argo_workflows.py")
    extractor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extractor)
    source = json.loads((ARGO_WORKFLOWS_SCHEMAS / "SOURCE.json").read_text(encoding="utf-8"))
    assert (source["package"], source["version"], source["license"]) == ("hera", "7.1.0", "Apache-2.0")
    assert source["wheel_sha256"] == extractor.WHEEL_SHA256
    assert "Apache License" in (ARGO_WORKFLOWS_SCHEMAS / "LICENSE").read_text(encoding="utf-8")
    for name, entry in source["files"].items():
        data = (ARGO_WORKFLOWS_SCHEMAS / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"{name} differs from what was extracted"
        if name.endswith(".json"):
            assert extractor.schema_bytes(json.loads(data)) == data  # no hand edit, not even of the layout
    assert {e.get("kind") for e in source["files"].values()} >= {"Workflow"}


def test_strict_crd_schema_closes_listed_objects_and_keeps_open_ones_open() -> None:
    schema = {"type": "object", "properties": {
        "spec": {"type": "object", "nullable": True, "properties": {"replicas": {"type": "integer"}}},
        "open": {"type": "object"},                       # preserve-unknown-fields: no properties listed
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "metadata": {"$ref": "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta#"},
    }}
    strict = strict_crd_schema(schema)
    assert strict["additionalProperties"] is False
    assert strict["properties"]["spec"]["additionalProperties"] is False
    assert strict["properties"]["spec"]["type"] == ["object", "null"]
    assert "additionalProperties" not in strict["properties"]["open"]
    assert strict["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    assert strict["properties"]["metadata"]["$ref"].endswith("#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
    assert "nullable" in schema["properties"]["spec"], "the input is not changed"
