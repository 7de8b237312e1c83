"""Offline schema validation of Kubernetes manifests: what an API server with strict field
validation (`kubectl apply --validate=strict`, the default) would refuse, caught before a cluster.

    python -m serving.k8s_validate build/k8s            # every *.yaml in the folder; exit 2 if invalid
    python -m serving.k8s_validate build/k8s/rollout.yaml --kubernetes-version 1.33

`llmops release VERSION --target kubernetes --render DIR` runs the same check on what it rendered,
before anything is written (serving/k8s_render.py).

Schemas, none written here:
- core kinds (Service, Deployment, Job, PodTemplate, ...): the strict JSON schemas that the PyPI
  package `kubernetes-validate` bundles for each Kubernetes minor (`additionalProperties: false`, so
  a misspelled field is an error, as the API server's strict decoding makes it);
- Argo Rollouts `Rollout` and `AnalysisTemplate`: the CRDs' `openAPIV3Schema` as the npm package
  `@kubernetes-models/argo-rollouts@0.3.2` ships it, vendored under serving/k8s/schemas/argo-rollouts/
  with its licence and sha256s (SOURCE.json; `extract_argo_rollouts.py` re-creates it). On load, two
  mechanical changes make it mean what the API server does with a structural CRD schema: an object
  that lists its `properties` gets `additionalProperties: false` (strict field validation: unknown
  fields are refused), and `nullable: true` becomes a `"null"` alternative of its `type`. Objects the
  CRD leaves open (x-kubernetes-preserve-unknown-fields, such as a pod's `volumes` and `resources`)
  list no properties and stay open; those parts are checked by the core schemas below.
- Argo Workflows `Workflow` (`llmops pipeline merge --render argo-workflows`): the JSON schema of
  Argo Workflows v4.0.5 as the PyPI package `hera==7.1.0` models it, vendored under
  serving/k8s/schemas/argo-workflows/ with its licence and sha256s (`extract_argo_workflows.py` says
  why that package and re-creates it), made strict on load the same way. What Argo's own validation
  refuses and a schema cannot say is checked too: the entrypoint and each task's `template` name a
  template, each of a DAG task's `dependencies` names a task of the same DAG, no cycle, no duplicate
  or malformed name.
- The pods inside a CRD are checked against the core schemas too, so a Rollout's pod template gets
  the same field-by-field check as a Deployment's: `spec.template` of a Rollout is validated as a
  core `PodTemplate`, each `provider.job` of an AnalysisTemplate (the probes) as a `batch/v1 Job`,
  and each `container` of a Workflow's templates as a PodTemplate's container.

A problem names the file, the document (`Rollout/llmops`) and the field's path (`spec.replcas`,
`spec.template.spec.containers[0].ports[0].containerPort`).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from llmops.errors import InputError

# The oldest Kubernetes minor the rendered manifests must be accepted by (a field added later would
# be refused by such a cluster). kubernetes-validate picks its newest schema not newer than this.
KUBERNETES_VERSION = "1.30"
ARGO_SCHEMAS = Path(__file__).with_name("k8s") / "schemas" / "argo-rollouts"
ARGO_WORKFLOWS_SCHEMAS = ARGO_SCHEMAS.with_name("argo-workflows")
ARGO_API_VERSION = "argoproj.io/v1alpha1"
ARGO_KINDS = {"Rollout": ARGO_SCHEMAS / "rollout.json",
              "AnalysisTemplate": ARGO_SCHEMAS / "analysistemplate.json",
              "Workflow": ARGO_WORKFLOWS_SCHEMAS / "workflow.json"}
# Argo's template and task names (its validation's workflowFieldNameFmt, at most 128 characters)
ARGO_NAME = re.compile(r"[a-zA-Z0-9][-a-zA-Z0-9]{0,127}")
CORE_DEFINITIONS = "https://kubernetes.io/api/_definitions.json"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


@dataclass(frozen=True)
class Problem:
    """One schema violation: where (file, document, field path) and what."""

    file: str
    document: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.document}: {self.path or '(top level)'}: {self.message}"


# ---------------------------------------------------------------------------------------- schemas

def _minor(version: str) -> tuple[int, int] | None:
    import re

    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?", version.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def _schema_dir(version: str) -> Any:
    """kubernetes-validate's strict schemas for the newest minor not newer than `version`."""
    import importlib.resources

    import kubernetes_validate.utils as kv

    bundled = sorted({m for m in map(_minor, kv.all_versions()) if m})
    wanted = _minor(version)
    if wanted is None or not bundled or not bundled[0] <= wanted <= bundled[-1]:
        raise InputError(f"no schemas for Kubernetes {version!r} in kubernetes-validate {_kv_version()} "
                         f"(it has {'.'.join(map(str, bundled[0]))} to {'.'.join(map(str, bundled[-1]))})", field="kubernetes_version")
    major, minor = max(m for m in bundled if m <= wanted)
    return (importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
            / f"v{major}.{minor}.0-local-strict")


def _kv_version() -> str:
    from kubernetes_validate.version import __version__

    return __version__


@cache
def _core_registry(version: str) -> Any:
    from referencing import Registry, Resource

    definitions = json.loads((_schema_dir(version) / "_definitions.json").read_text(encoding="utf-8"))
    return Registry().with_resource(CORE_DEFINITIONS, Resource.from_contents(definitions))


@cache
def _core_validator(kind: str, api_version: str, version: str) -> Any:
    """The strict schema of a core kind, e.g. ('Service', 'v1') or ('Job', 'batch/v1'); None if unknown."""
    import re

    from jsonschema import Draft202012Validator

    # kubernetes-validate's file naming: <kind>-<group without domain>-<version>.json, <kind>-<version>.json
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = _schema_dir(version) / f"{kind.lower()}-{group_version}.json"
    if not path.is_file():
        return None
    schema = json.loads(path.read_text(encoding="utf-8"))
    return Draft202012Validator(schema, registry=_core_registry(version))


def strict_crd_schema(node: Any) -> Any:
    """A CRD schema as the API server applies it with strict field validation (a new object).

    Objects listing `properties` refuse unknown fields; `nullable: true` admits null; the ObjectMeta
    reference points at the core definitions.
    """
    if isinstance(node, list):
        return [strict_crd_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict_crd_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if out.get("properties") and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if isinstance(out.get("$ref"), str) and out["$ref"].rstrip("#") == OBJECT_META:
        out["$ref"] = f"{CORE_DEFINITIONS}#/$defs/{OBJECT_META}"
    return out


@cache
def _argo_validator(kind: str, version: str) -> Any:
    from jsonschema import Draft202012Validator

    schema = json.loads(ARGO_KINDS[kind].read_text(encoding="utf-8"))
    return Draft202012Validator(strict_crd_schema(schema), registry=_core_registry(version))


# ---------------------------------------------------------------------------------------- errors

def _path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _leaves(error: Any) -> Iterator[Any]:
    """The errors that explain an anyOf/oneOf failure: those of the alternatives whose type the value
    has (`metadata: {oneOf: [ObjectMeta, null]}` with a mapping reports ObjectMeta's errors, not
    "is not of type 'null'"); when no alternative has its type, jsonschema's best match."""
    from jsonschema.exceptions import best_match

    if not (error.context and error.validator in ("anyOf", "oneOf")):
        yield error
        return
    branches: dict[Any, list[Any]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0] if sub.relative_schema_path else None, []).append(sub)
    typed = [errs for errs in branches.values()
             if not any(sub.validator == "type" and not sub.relative_path for sub in errs)]
    if typed:
        for sub in min(typed, key=len):
            yield from _leaves(sub)
    else:
        yield from _leaves(best_match(error.context))


def _problems(validator: Any, doc: Any, prefix: list[Any]) -> Iterator[tuple[str, str]]:
    for error in validator.iter_errors(doc):
        for leaf in _leaves(error):
            at = [*prefix, *leaf.absolute_path]
            if leaf.validator == "additionalProperties" and isinstance(leaf.instance, dict):
                known = set(leaf.schema.get("properties", {}))
                for key in sorted(k for k in leaf.instance if k not in known):
                    yield _path([*at, key]), "unknown field (not in the schema)"
            elif leaf.validator == "required":
                missing = leaf.message.split("'")[1] if "'" in leaf.message else ""
                yield _path([*at, missing]), "required field is missing"
            else:
                yield _path(at), leaf.message


# ---------------------------------------------------------------------------------------- checks

def _mappings(value: Any) -> list[dict[str, Any]]:
    """The items of a list, each a mapping ({} for any other item; [] when not a list): the schema
    check reports wrong types, these checks must only not trip on them."""
    return [item if isinstance(item, dict) else {} for item in value] if isinstance(value, list) else []


def _workflow_references(spec: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """What Argo's validation (`argo lint`, the controller) refuses and a schema cannot say."""
    templates = _mappings(spec.get("templates"))
    names = [t.get("name") for t in templates]
    yield from _names(names, "spec.templates", "template")
    if "workflowTemplateRef" not in spec and spec.get("entrypoint") not in names:
        yield "spec.entrypoint", f"names no template of this workflow ({spec.get('entrypoint')!r})"
    for i, template in enumerate(templates):
        dag = template.get("dag")
        tasks = _mappings(dag.get("tasks")) if isinstance(dag, dict) else []
        at = f"spec.templates[{i}].dag.tasks"
        task_names = [t.get("name") for t in tasks]
        yield from _names(task_names, at, "task")
        graph: dict[str, list[str]] = {}
        for j, task in enumerate(tasks):
            if "templateRef" not in task and "inline" not in task and task.get("template") not in names:
                yield f"{at}[{j}].template", f"names no template of this workflow ({task.get('template')!r})"
            deps = task.get("dependencies") if isinstance(task.get("dependencies"), list) else []
            for k, dep in enumerate(deps):
                if dep not in task_names:
                    yield f"{at}[{j}].dependencies[{k}]", f"names no task of this DAG ({dep!r})"
            graph[str(task.get("name"))] = [str(d) for d in deps]
        cycle = _cycle(graph)
        if cycle:
            first = task_names.index(cycle[0])
            yield f"{at}[{first}].dependencies", f"dependency cycle: {' -> '.join(cycle)}"


def _names(names: list[Any], at: str, what: str) -> Iterator[tuple[str, str]]:
    for i, name in enumerate(names):
        if not isinstance(name, str) or not ARGO_NAME.fullmatch(name):
            yield (f"{at}[{i}].name",
                   f"a {what} name is letters, digits and '-', starting with a letter or digit ({name!r})")
        elif name in names[:i]:
            yield f"{at}[{i}].name", f"a second {what} named {name!r}"


def _cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One dependency cycle of `graph` (node -> the nodes it depends on) as a path, or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done or node not in graph:
            return None
        for dep in graph[node]:
            found = visit(dep, [*path, node])
            if found:
                return found
        done.add(node)
        return None

    return next((c for c in (visit(n, []) for n in graph) if c), None)


def _workflow_containers(spec: dict[str, Any], version: str) -> Iterator[tuple[str, str]]:
    """Each template's container, field by field, as the container of a core PodTemplate (Argo names
    it `main` when the template does not)."""
    for i, template in enumerate(_mappings(spec.get("templates"))):
        container = template.get("container")
        if isinstance(container, dict):
            pod = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "template"},
                   "template": {"spec": {"containers": [{"name": "main", **container}]}}}
            at = f"spec.templates[{i}].container"
            for path, message in _problems(_core_validator("PodTemplate", "v1", version), pod, []):
                yield path.replace("template.spec.containers[0]", at, 1), message


def check_document(doc: Any, version: str = KUBERNETES_VERSION) -> list[tuple[str, str]]:
    """(field path, message) for each problem of one manifest document; [] when it is valid."""
    if not isinstance(doc, dict):
        return [("", f"a manifest must be a mapping, not {type(doc).__name__}")]
    kind, api_version = doc.get("kind"), doc.get("apiVersion")
    if not isinstance(kind, str) or not isinstance(api_version, str):
        return [("kind" if not isinstance(kind, str) else "apiVersion", "required field is missing")]
    found: list[tuple[str, str]] = []
    if api_version == ARGO_API_VERSION and kind in ARGO_KINDS:
        found += _problems(_argo_validator(kind, version), doc, [])
        spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
        if kind == "Rollout" and isinstance(spec.get("template"), dict):
            # The pod template, field by field, as a core PodTemplate (template -> spec.template).
            pod = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "template"},
                   "template": spec["template"]}
            found += [(path.replace("template", "spec.template", 1), message) for path, message
                      in _problems(_core_validator("PodTemplate", "v1", version), pod, [])]
        for index, metric in enumerate(spec.get("metrics") or [] if kind == "AnalysisTemplate" else []):
            job = (metric.get("provider") or {}).get("job") if isinstance(metric, dict) else None
            if isinstance(job, dict):
                # The probe Job as Argo creates it: its metadata and spec in a batch/v1 Job.
                wrapped = {"apiVersion": "batch/v1", "kind": "Job",
                           "metadata": {**(job.get("metadata") or {}), "name": "probe"}, "spec": job.get("spec")}
                prefix = ["spec", "metrics", index, "provider", "job"]
                found += _problems(_core_validator("Job", "batch/v1", version), wrapped, prefix)
        if kind == "Workflow":
            found += _workflow_containers(spec, version)
            found += _workflow_references(spec)
    else:
        validator = _core_validator(kind, api_version, version)
        if validator is None:
            return [("kind", f"no schema for kind {kind!r} of apiVersion {api_version!r} (Kubernetes {version} "
                             f"core kinds, and Argo's {', '.join(ARGO_KINDS)})")]
        found += _problems(validator, doc, [])
    seen: set[str] = set()
    unique = []
    for path, message in sorted(found, key=lambda item: item[0]):  # the CRD and the core schema may both name the same field
        if path not in seen:
            seen.add(path)
            unique.append((path, message))
    return unique


def _label(doc: Any, index: int) -> str:
    if isinstance(doc, dict):
        meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
        name = meta.get("name") or meta.get("generateName")
        return f"{doc.get('kind', '?')}/{name or '?'}"
    return f"document {index + 1}"


def check_text(text: str, file: str, version: str = KUBERNETES_VERSION) -> list[Problem]:
    """Every problem of every document in one YAML text (a multi-document file is fine)."""
    try:
        docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        line = exc.problem_mark.line + 1 if getattr(exc, "problem_mark", None) else None
        raise InputError(f"invalid YAML: {exc}", file=file, line=line) from None
    return [Problem(file, _label(doc, i), path, message)
            for i, doc in enumerate(docs) for path, message in check_document(doc, version)]


def check_texts(texts: dict[str, str], version: str = KUBERNETES_VERSION) -> list[Problem]:
    return [problem for name, text in texts.items() for problem in check_text(text, name, version)]


def ensure_valid(texts: dict[str, str], version: str = KUBERNETES_VERSION) -> None:
    """Raise InputError (the CLI's exit 2) listing every problem; the first names its field."""
    problems = check_texts(texts, version)
    if problems:
        first = problems[0]
        listed = "\n".join(f"  {p}" for p in problems)
        raise InputError(f"{len(problems)} schema problem(s) (Kubernetes {version}, strict field validation):\n{listed}",
                         file=first.file, field=first.path or None)


def manifest_files(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and not p.name.startswith("."))
        elif path.is_file():
            files.append(path)
        else:
            raise InputError("file not found", file=str(path))
    if not files:
        raise InputError("no manifest (*.yaml) to validate", file=", ".join(map(str, paths)))
    return files


def validate_paths(paths: Iterable[Path], version: str = KUBERNETES_VERSION) -> list[Path]:
    """Validate manifest files and folders; returns the files checked, raises InputError if any is invalid."""
    files = manifest_files(paths)
    ensure_valid({str(p): p.read_text(encoding="utf-8") for p in files}, version)
    return files


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m serving.k8s_validate", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="manifest files or folders of *.yaml")
    parser.add_argument("--kubernetes-version", default=KUBERNETES_VERSION,
                        help=f"oldest cluster version to accept the manifests (default {KUBERNETES_VERSION})")
    args = parser.parse_args(argv)
    try:
        files = validate_paths(args.paths, args.kubernetes_version)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in files:
        print(f"valid: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
