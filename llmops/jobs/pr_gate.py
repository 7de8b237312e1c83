"""The pull-request gate: what changed against the base ref gets checked, and everything is diffed.

    llmops gate pr --base origin/main

1. `git diff` against the merge base (plus uncommitted and untracked files, so a local run sees
   the same change the workflow will) says what changed.
2. Changed datasets get the data checks (schema, sha256 vs card, duplicates, PII, overlap,
   licence). Every prompt is linted (milliseconds). A changed training config is validated.
3. Eval cases run against the model under test: the smoke subset always, plus every case that
   uses a changed prompt or lives in a changed case file, plus a fixed slice of the eval split for
   ROUGE-L and token F1. The model is the registry's `production` version, else its `candidate`
   (what the main job trained on this machine), else the untuned default base model;
   `--model`/`--endpoint` override. Prompts are rendered through the model's chat template. Each
   result is cached under the hash of (rendered prompt, case, model version, params, assertion
   versions, and the sha256 of the code that turns a prompt into an output and a verdict:
   RESULT_CODE), so a PR that edits the runtime is never judged on stale results.
4. What is measured and how it is judged come from the base ref, never from the PR's tree
   (BASE_TREE_PATHS, read with `git archive`): the thresholds, the eval split, and the base's
   cases. A PR that changes them (a threshold, a deleted, renamed or redefined case, an eval row's
   id or content) gets a finding naming each change, and fails, unless `override` (`--allow-gate-changes
   REASON`, which the workflow passes for the `eval-gate-change` label) accepts them as warnings on
   the record (llmops/jobs/gate_changes.py). New thresholds take effect after merge.
5. Every metric is compared with main's baseline over the same case and row ids: the committed
   `evals/baseline/report.json` at the base ref when it was measured on this same model, else the
   base tree measured now on this model (cached), so a delta is the PR's effect, never a model
   change.
The gate fails on any failed data check or lint, a suite below its floor or dropping more than
`max_drop`, a NaN metric, a dataset metric doing the same, a change to the gate itself (without the
override), or a case new in the PR that fails on the model under test.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.cache import ResultCache
from evals.client import OpenAIClient
from evals.metrics import exact_match, rouge_l, token_f1
from evals.prompt_lint import find_token_counter, lint_prompts
from evals.rule_evals import CaseRun, gate_value, load_cases, load_thresholds, parallel, read_eval_rows
from governance.datacheck import check_dataset
from llmops.errors import InputError
from llmops.files import atomic_write_json, atomic_write_text
from llmops.jobs.gate_changes import (
    EVAL_SPLIT,
    THRESHOLDS,
    Override,
    add_gate_change_checks,
    case_changes,
    eval_row_changes,
    render_pr_markdown,
    threshold_changes,
)
from llmops.jobs.models import default_context_length, lint_model_folders
from llmops.lineage import tree_sha256
from llmops.prompts import chat_format_of, load_all
from llmops.registry import open_registry
from llmops.report import Finding, Metric, Report
from llmops.settings import Settings
from serving.app import running_server
from serving.guards import GUARD_FILES
from training.config import load_config
from training.finetune import resolve_base_model

BASELINE_PATH = "evals/baseline/report.json"
GATE_ROWS = 16  # eval-split rows scored by every gate run: enough for a stable ROUGE-L, cheap on CPU


@dataclass
class Changes:
    base: str
    merge_base: str
    files: list[str]
    datasets: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    case_files: list[str] = field(default_factory=list)
    training_config: bool = False
    thresholds: bool = False


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        raise InputError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def changed_files(root: Path, base: str) -> Changes:
    """Files that differ between the merge base of `base` and HEAD and the working tree, plus untracked ones."""
    try:
        merge_base = _git(root, "merge-base", base, "HEAD").strip()
    except InputError:
        raise InputError(f"base ref {base!r} is not a commit this checkout knows (fetch it, e.g. "
                         "`git fetch origin main`, or check out with full history)", field="--base") from None
    files = set(_git(root, "diff", "--name-only", merge_base).split())
    files |= set(_git(root, "ls-files", "--others", "--exclude-standard").split())
    ch = Changes(base=base, merge_base=merge_base, files=sorted(files))
    for path in ch.files:
        parts = path.split("/")
        if parts[0] == "datasets" and len(parts) >= 3:
            ch.datasets.append(parts[1])
        elif parts[0] == "prompts" and path.endswith((".yaml", ".yml")):
            ch.prompts.append(Path(path).stem)
        elif parts[:2] == ["evals", "cases"]:
            ch.case_files.append(path)
        elif path == "training/config.yaml":
            ch.training_config = True
        elif path == THRESHOLDS:
            ch.thresholds = True
    ch.datasets = sorted(set(ch.datasets))
    return ch


def load_baseline(root: Path, base: str, override: Path | None) -> tuple[Report | None, str]:
    if override is not None:
        return Report.load(override), str(override)
    result = subprocess.run(["git", "show", f"{base}:{BASELINE_PATH}"], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        return None, f"{base}:{BASELINE_PATH} (missing)"
    try:
        return Report.from_dict(json.loads(result.stdout)), f"{base}:{BASELINE_PATH}"
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"baseline is not a report: {exc}", file=f"{base}:{BASELINE_PATH}") from None


# Paths of the base ref's tree the gate trusts over the pull request's: what is measured (cases,
# prompts, the eval split) and how it is judged (thresholds). A PR's own edits to these take effect
# after merge; until then the gate reports them.
BASE_TREE_PATHS = ("prompts", "evals/cases", THRESHOLDS, EVAL_SPLIT)
# Code whose change can change an output or a verdict: part of every result-cache key, so a PR that
# edits the runtime or an assertion is never judged on results cached before the edit.
# The guards answer some cases (a blocked injection is a pass), so their code and data count too.
RESULT_CODE = ("serving", "evals/assertions.py", "evals/client.py", "evals/rule_evals.py", *GUARD_FILES,
               "llmops/prompts.py")


def extract_base_tree(root: Path, commit: str, dest: Path) -> Path:
    """The trusted files of `commit` (BASE_TREE_PATHS) written under `dest`, via `git archive`."""
    archive = subprocess.run(["git", "archive", "--format=tar", commit, *BASE_TREE_PATHS], cwd=root,
                             capture_output=True)
    if archive.returncode != 0:
        raise InputError(f"cannot read the base tree at {commit[:10]}: {archive.stderr.decode().strip()}",
                         field="--base")
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    (dest / "pyproject.toml").touch()  # a Settings root
    return dest


def result_code_sha256(root: Path) -> str:
    """sha256 over RESULT_CODE's files, whether the guards are on (LLMOPS_GUARDS) and the versions of the
    runtimes that produce outputs."""
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256(f"guards={Settings.load().guards}".encode())
    for rel in RESULT_CODE:
        path = root / rel
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            if file.is_file():
                digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes())
    for dist in ("onnxruntime", "transformers", "torch", "tokenizers"):
        try:
            digest.update(f"{dist}=={version(dist)}".encode())
        except PackageNotFoundError:
            pass
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------- model under test


@dataclass
class ModelUnderTest:
    """What the cases run against: a model folder to serve, or an endpoint that is already up."""

    version: str  # goes into every cache key
    description: str
    model_dir: Path | None = None
    backend: str = "onnx"
    endpoint: str | None = None
    chat: Any = None  # llmops.prompts.ChatFormat of the model, None for the plain format
    _session: contextlib.ExitStack | None = field(default=None, repr=False, compare=False)
    _url: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.model_dir is not None and self.chat is None:
            self.chat = chat_format_of(self.model_dir)  # files only: a cached run loads no model

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Inside it, the first `serve()` starts the server and later ones reuse it (the head and the
        base tree are measured on one loaded model); it stops when the session ends."""
        with contextlib.ExitStack() as stack:
            self._session = stack
            try:
                yield
            finally:
                self._session, self._url = None, None

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        if self.endpoint:
            yield self.endpoint
            return
        if self._url is not None:
            yield self._url
            return
        if self.model_dir is None:
            raise InputError("the model under test has neither an endpoint nor a model folder")
        server = running_server(self.model_dir, port=0, backend=self.backend)
        if self._session is not None:
            self._url = self._session.enter_context(server)
            yield self._url
            return
        with server as url:
            yield url


def resolve_model(settings: Settings, *, model_dir: Path | None = None, endpoint: str | None = None,
                  echo: Callable[[str], None] = print) -> ModelUnderTest:
    if endpoint:
        with OpenAIClient(endpoint, timeout=30, retries=2) as client:  # its chat template, from /v1/models
            client.resolve_model()
            chat = client.chat_format
        return ModelUnderTest(version=f"endpoint:{endpoint}", description=f"endpoint {endpoint}", endpoint=endpoint,
                              chat=chat)
    if model_dir is not None:
        model_dir = Path(model_dir)
        backend = "onnx" if (model_dir / "model.onnx").is_file() else "torch"
        return ModelUnderTest(version=f"dir:{tree_sha256(model_dir)[:16]}", description=f"model folder {model_dir}",
                              model_dir=model_dir, backend=backend)
    reg = open_registry(settings)
    aliases = reg.aliases()
    for alias in ("production", "candidate"):
        # production when there is one; on a machine where only the main job ran, what it trained.
        if alias in aliases:
            mv = reg.get(alias)  # verifies checksums
            manifest_hash = hashlib.sha256(json.dumps(mv.manifest, sort_keys=True).encode()).hexdigest()[:16]
            return ModelUnderTest(version=f"registry:{mv.version}:{manifest_hash}",
                                  description=f"registry {alias} (version {mv.version}) " + (
                                      f"from the shared registry {settings.registry_uri}" if settings.registry_uri
                                      else "of the local registry: no shared registry (LLMOPS_REGISTRY_URI)"),
                                  model_dir=mv.files / "onnx" / "fp32", backend="onnx")
    cfg = load_config(settings.root / "training" / "config.yaml")
    echo(f"    no production or candidate model in the registry: using the untuned base model {cfg.base_model} "
         "(run `bash scripts/main-job.sh` to gate against a tuned one)")
    path, info = resolve_base_model(cfg, settings, progress=False)
    where = f"the shared registry {settings.registry_uri}" if settings.registry_uri else "the local registry"
    return ModelUnderTest(version=str(info["id"]), description=f"untuned base model {info['id']} "
                                                                f"(no production or candidate in {where})",
                          model_dir=Path(path), backend="torch")


# --------------------------------------------------------------------------- checks


def static_checks(settings: Settings, changes: Changes, report: Report, model: ModelUnderTest | None = None) -> None:
    """Data checks of the changed datasets, the prompt lint and the training config.

    The lint counts tokens with the tokenizer of the model under test when it is a folder (so a cold
    CI cache still measures the context with the real tokenizer), else with the first of
    `lint_model_folders`."""
    for name in changes.datasets:
        folder = settings.datasets_dir / name
        if not folder.is_dir():
            continue  # a removed dataset has nothing left to check
        try:
            report.checks.extend(check_dataset(folder, root=settings.root))
        except InputError as exc:  # unreadable data fails the gate with the reason, not the run
            report.add_check(f"data:{name}", [Finding(str(exc), file=exc.file, line=exc.line, field=exc.field)])
    prompt_files = sorted(settings.prompts_dir.glob("*.yaml"))
    folders = [model.model_dir] if model is not None and model.model_dir is not None else []
    counter = find_token_counter(folders + lint_model_folders(settings))
    findings = lint_prompts(prompt_files, counter, default_context_length())
    for f in findings:
        if f.file and Path(f.file).is_relative_to(settings.root):
            f.file = str(Path(f.file).relative_to(settings.root))
    report.add_check("prompt lint", findings, summary=f"{len(prompt_files)} prompt files")
    if changes.training_config:
        path = settings.root / "training" / "config.yaml"
        try:
            load_config(path)
            report.add_check("training config", [], summary="valid")
        except InputError as exc:
            report.add_check("training config", [Finding(str(exc), file="training/config.yaml", field=exc.field)])


# --------------------------------------------------------------------------- evals


def _row_key(rendered: str, model_version: str, params: dict[str, Any]) -> str:
    payload = json.dumps({"row_prompt": rendered, "model": model_version, "params": params}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def run_gate_evals(tree: Path, changes: Changes | None, model: ModelUnderTest, *, all_cases: bool,
                   rows: int, rows_dir: Path, cache_dir: Path, code_sha256: str = "",
                   echo: Callable[[str], None] = print) -> tuple[list[dict], list[dict], dict]:
    """Run the selected cases of `tree` (its prompts/ and evals/cases/: the PR's checkout, or the base
    tree) and the first `rows` rows of `rows_dir`'s eval split, from the cache where possible.
    `code_sha256` (result_code_sha256) goes into every cache key. Returns (cases, rows, stats)."""
    prompts = load_all(tree / "prompts")
    cases = load_cases(tree / "evals" / "cases", tree / "prompts")
    if not all_cases and changes is not None:
        changed_files = {str(tree / f) for f in changes.case_files} | set(changes.case_files)
        cases = [c for c in cases if "smoke" in c.tags or c.prompt in changes.prompts
                 or c.file in changed_files or str(Path(c.file).resolve()) in changed_files]
    cache = ResultCache(cache_dir)
    answer = prompts["answer"]
    params = answer.params.model_dump()
    eval_rows = read_eval_rows(rows_dir, rows)
    version = f"{model.version}|code:{code_sha256}"

    case_run = CaseRun(cases, prompts, version, cache)
    case_run.lookup(model.chat)
    row_prompts = {}
    pending_rows, row_results = [], {}
    for row in eval_rows:
        values = {"question": row["question"], **({"context": row["context"]} if row.get("context") else {})}
        try:
            rendered = answer.render(model.chat, **values)
        except Exception:  # noqa: BLE001 - the row scores 0, like an unanswered one; lint names the cause
            row_results[row["id"]] = ""
            continue
        row_prompts[row["id"]] = rendered
        key = _row_key(rendered, version, params)
        hit = cache.get(key)
        if hit is not None:
            row_results[row["id"]] = hit["output"]
        else:
            pending_rows.append((row, key))

    if case_run.pending or pending_rows:
        echo(f"    model calls: {len(case_run.pending)} cases, {len(pending_rows)} rows "
             f"({cache.hits} from cache); serving {model.description}")
        with model.serve() as url, OpenAIClient(url, timeout=120, retries=2) as client:
            client.resolve_model()
            case_run.run(client, 4)

            def complete(item: tuple[dict, str]) -> str:
                row, _ = item
                return client.complete(row_prompts[row["id"]], **params)

            outputs = parallel(complete, pending_rows, 4)
            for (row, key), output in zip(pending_rows, outputs, strict=True):
                cache.put(key, {"output": output})
                row_results[row["id"]] = output
    else:
        echo(f"    all {len(cases)} cases and {len(eval_rows)} rows from cache; no model call")

    case_records = [case_run.results[c.id] for c in cases]
    for record in case_records:  # repo-relative paths: the report is committed and posted
        if record.get("file") and Path(record["file"]).is_absolute() and Path(record["file"]).is_relative_to(tree):
            record["file"] = Path(record["file"]).relative_to(tree).as_posix()
    row_records = []
    for row in eval_rows:
        out = row_results[row["id"]].strip()
        row_records.append({"id": row["id"], "output": out, "rouge_l": rouge_l(out, row["answer"]),
                            "token_f1": token_f1(out, row["answer"]), "exact_match": float(exact_match(out, row["answer"]))})
    stats = {"cases": len(cases), "rows": len(eval_rows), "cache_hits": cache.hits, "cache_misses": cache.misses}
    return case_records, row_records, stats


def compute_metrics(cases: list[dict], rows: list[dict], baseline: Report | None,
                    thresholds_path: Path) -> tuple[dict[str, Metric], list[Finding]]:
    """Per-suite pass rates and dataset means, each against the baseline over the same ids."""
    thresholds = load_thresholds(thresholds_path)
    base_cases = {c["id"]: c for c in (baseline.cases if baseline else [])}
    base_rows = {r["id"]: r for r in (baseline.info.get("rows", []) if baseline else [])}
    notes: list[Finding] = []
    metrics: dict[str, Metric] = {}

    def gated(name: str, head: float, base: float | None) -> Metric:
        return gate_value(thresholds.for_metric(name), head, base)

    by_suite: dict[str, list[dict]] = defaultdict(list)
    for case in cases:
        by_suite[case["suite"]].append(case)
    for suite, items in sorted(by_suite.items()):
        head = sum(c["passed"] for c in items) / len(items)
        shared = [c for c in items if c["id"] in base_cases]
        base = None
        if shared:
            head = sum(c["passed"] for c in shared) / len(shared)
            base = sum(base_cases[c["id"]]["passed"] for c in shared) / len(shared)
        if baseline and len(shared) < len(items):
            new = [c["id"] for c in items if c["id"] not in base_cases]
            notes.append(Finding(f"suite {suite}: {len(new)} new cases not in the baseline are reported but not "
                                 f"compared: {', '.join(new[:5])}", severity="warning"))
        metrics[f"pass_rate.{suite}"] = gated(f"pass_rate.{suite}", head, base)
    for name in ("rouge_l", "token_f1", "exact_match"):
        if not rows:
            continue
        head = sum(r[name] for r in rows) / len(rows)
        shared = [r for r in rows if r["id"] in base_rows]
        base = sum(base_rows[r["id"]][name] for r in shared) / len(shared) if shared else None
        if shared and len(shared) == len(rows):
            metrics[f"dataset.{name}"] = gated(f"dataset.{name}", head, base)
        else:
            metrics[f"dataset.{name}"] = gated(f"dataset.{name}", head, None)
    return metrics, notes


def new_case_findings(cases: list[dict], baseline: Report | None) -> list[Finding]:
    """A case added by the PR that fails is an error: either the case expects what the model cannot
    produce, or the change broke it. It has no base to regress from, so the suite rates alone would
    let one slip through (one case is less than a suite's max_drop)."""
    if baseline is None:
        return []
    known = {c["id"] for c in baseline.cases}
    findings = []
    for case in cases:
        if case["id"] in known or case.get("passed"):
            continue
        why = "; ".join(f"{a['type']}: {a.get('message', '')}" for a in case.get("assertions", [])
                        if not a.get("passed"))
        findings.append(Finding(f"new case {case['id']} fails on the model under test: {why[:300]}",
                                file=case.get("file"), line=case.get("line"), field=case["id"]))
    return findings


# --------------------------------------------------------------------------- the gate


def run_pr_gate(settings: Settings, *, base: str, out_dir: Path, model_dir: Path | None = None,
                endpoint: str | None = None, baseline_path: Path | None = None, all_cases: bool = False,
                rows: int = GATE_ROWS, override: Override | None = None,
                echo: Callable[[str], None] = print) -> Report:
    """The gate (see the module docstring). With `base` empty (`llmops gate baseline`), the checkout
    is its own base: every case runs and nothing is compared. `override` accepts the PR's changes to
    the gate itself (thresholds, cases, eval rows) as warnings, recorded in the report."""
    import tempfile

    if override is not None and not base:
        raise InputError("--allow-gate-changes needs --base: without a base there is no gate change to accept",
                         field="--allow-gate-changes")
    started = time.perf_counter()
    report = Report(kind="pr-gate")
    changes = changed_files(settings.root, base) if base else None
    if changes:
        echo(f"==> {len(changes.files)} files changed against {base} ({changes.merge_base[:10]}): "
             f"datasets {changes.datasets or '-'}, prompts {changes.prompts or '-'}, "
             f"case files {len(changes.case_files)}, training config {'yes' if changes.training_config else 'no'}")
    model = resolve_model(settings, model_dir=model_dir, endpoint=endpoint, echo=echo)
    code_sha = result_code_sha256(settings.root)
    cache_dir = settings.cache_dir / "eval"
    notes: list[Finding] = []
    with tempfile.TemporaryDirectory(prefix="llmops-base-tree-") as tmp, model.session():
        # What is measured and how it is judged come from the base ref: a PR cannot loosen its gate.
        tree = extract_base_tree(settings.root, changes.merge_base, Path(tmp)) if changes else settings.root
        thresholds = tree / THRESHOLDS
        rows_dir = (tree / EVAL_SPLIT).parent
        if changes:
            static_checks(settings, changes, report, model)
        baseline, baseline_from = (load_baseline(settings.root, base, baseline_path) if base or baseline_path
                                   else (None, "none"))
        echo(f"==> evals against {model.description}")
        cases, row_records, stats = run_gate_evals(settings.root, changes, model, all_cases=all_cases, rows=rows,
                                                   rows_dir=rows_dir, cache_dir=cache_dir, code_sha256=code_sha,
                                                   echo=echo)
        if changes and (baseline is None or baseline.info.get("model_version") != model.version):
            # The committed baseline was measured on another model (or is missing): measure the base
            # tree on this model, so that the deltas are this PR's effect and not a model change.
            why = "missing" if baseline is None else f"measured on {baseline.info.get('model_version')}"
            echo(f"==> committed baseline {why}: measuring the base tree on {model.description}")
            base_cases, base_rows, base_stats = run_gate_evals(tree, changes, model, all_cases=all_cases, rows=rows,
                                                               rows_dir=rows_dir, cache_dir=cache_dir,
                                                               code_sha256=code_sha, echo=echo)
            baseline = Report(kind="pr-gate", cases=base_cases)
            baseline.info = {"rows": base_rows, "model_version": model.version, "eval": base_stats}
            baseline_from = f"{base} tree measured on {model.description} (committed baseline {why})"
        echo(f"==> baseline: {baseline_from}")
        report.metrics, metric_notes = compute_metrics(cases, row_records, baseline, thresholds)
        notes += metric_notes
        if changes:
            # The PR's changes to the gate itself: each named, each failing unless overridden.
            passed_on_main = {c["id"]: c.get("passed") for c in (baseline.cases if baseline else [])}
            add_gate_change_checks(report, {
                "thresholds": threshold_changes(thresholds, settings.root / THRESHOLDS) if changes.thresholds else [],
                "cases": case_changes(load_cases(tree / "evals" / "cases", tree / "prompts"),
                                      load_cases(settings.root / "evals" / "cases", settings.prompts_dir),
                                      passed_on_main, (tree, settings.root)),
                "eval rows": (eval_row_changes(tree / EVAL_SPLIT, settings.root / EVAL_SPLIT, rows)
                              if EVAL_SPLIT in changes.files else []),
            }, override, base)
    report.cases = cases
    report.add_check("new cases pass", new_case_findings(cases, baseline),
                     summary="a case the baseline does not have must pass on the model under test")
    failed_suites = [n for n, m in report.metrics.items() if m.passed is False]
    report.add_check("eval regressions", [Finding(
        f"{name}: {m.head:.3f} is below its floor {m.threshold:.3f} (base {m.base if m.base is None else round(m.base, 3)})",
        file="evals/thresholds.yaml", field=name) for name, m in report.metrics.items() if m.passed is False] + notes,
        summary=f"{len(report.metrics) - len(failed_suites)}/{len(report.metrics)} metrics within thresholds")
    report.info.update({  # info["override"], when given, is already there
        "base_ref": base or "-", "baseline": baseline_from, "model": model.description,
        "model_version": model.version, "result_code_sha256": code_sha, "changed": changes.files if changes else [],
        "rows": row_records, "eval": stats, "duration_s": round(time.perf_counter() - started, 2),
    })
    # report.md carries the override (or how to get one) under the verdict: see gate_changes.render_pr_markdown.
    atomic_write_json(Path(out_dir) / "report.json", report.to_dict())
    atomic_write_text(Path(out_dir) / "report.md", render_pr_markdown(report))
    return report
