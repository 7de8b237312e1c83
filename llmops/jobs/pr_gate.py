"""The pull-request gate: what changed against the base ref gets checked, and everything is diffed.

    llmops gate pr --base origin/main

1. `git diff` against the merge base (plus uncommitted and untracked files, so a local run sees
   the same change the workflow will) says what changed.
2. Changed datasets get the data checks (schema, sha256 vs card, duplicates, PII, overlap,
   licence). Every prompt is linted (milliseconds). A changed training config is validated.
3. Eval cases run against the model under test: the smoke subset always, plus every case that
   uses a changed prompt or lives in a changed case file, plus a fixed slice of the dataset's eval
   split for ROUGE-L and token F1. The model is the registry's `production` version, else its
   `candidate` (what the main job trained on this machine), else the untuned default base model;
   `--model`/`--endpoint` override. Prompts are rendered through the model's chat template.
   Each result is cached under the hash of (rendered prompt, case, model version, params,
   assertion versions).
4. Every metric is compared with main's baseline (`evals/baseline/report.json` as committed at
   the base ref, so a PR cannot edit its own baseline) over the same case and row ids.
The gate fails on any failed data check or lint, a suite below its floor or dropping more than
`max_drop` (evals/thresholds.yaml), a dataset metric doing the same, or a case new in the PR that
fails on the model under test.
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

from llmops.errors import InputError
from llmops.report import Finding, Metric, Report
from llmops.settings import Settings

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
        elif path == "evals/thresholds.yaml":
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

    def __post_init__(self) -> None:
        from llmops.prompts import chat_format_of

        if self.model_dir is not None and self.chat is None:
            self.chat = chat_format_of(self.model_dir)  # files only: a cached run loads no model

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        if self.endpoint:
            yield self.endpoint
            return
        from serving.app import running_server

        with running_server(self.model_dir, port=0, backend=self.backend) as url:
            yield url


def resolve_model(settings: Settings, *, model_dir: Path | None = None, endpoint: str | None = None,
                  echo: Callable[[str], None] = print) -> ModelUnderTest:
    from llmops.lineage import tree_sha256
    from llmops.registry import Registry

    if endpoint:
        from evals.client import OpenAIClient

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
    reg = Registry(settings.registry_dir)
    aliases = reg.aliases()
    for alias in ("production", "candidate"):
        # production when there is one; on a machine where only the main job ran, what it trained.
        if alias in aliases:
            mv = reg.get(alias)  # verifies checksums
            manifest_hash = hashlib.sha256(json.dumps(mv.manifest, sort_keys=True).encode()).hexdigest()[:16]
            return ModelUnderTest(version=f"registry:{mv.version}:{manifest_hash}",
                                  description=f"registry {alias} (version {mv.version})",
                                  model_dir=mv.files / "onnx" / "fp32", backend="onnx")
    from training.config import load_config
    from training.finetune import resolve_base_model

    cfg = load_config(settings.root / "training" / "config.yaml")
    echo(f"    no production or candidate model in the registry: using the untuned base model {cfg.base_model} "
         "(run `bash scripts/main-job.sh` to gate against a tuned one)")
    path, info = resolve_base_model(cfg, settings, progress=False)
    return ModelUnderTest(version=str(info["id"]), description=f"untuned base model {info['id']}",
                          model_dir=Path(path), backend="torch")


# --------------------------------------------------------------------------- checks


def static_checks(settings: Settings, changes: Changes, report: Report) -> None:
    from evals.prompt_lint import default_context_length, find_token_counter, lint_prompts
    from governance.datacheck import check_dataset
    from training.config import load_config

    for name in changes.datasets:
        folder = settings.datasets_dir / name
        if not folder.is_dir():
            continue  # a removed dataset has nothing left to check
        try:
            report.checks.extend(check_dataset(folder, root=settings.root))
        except InputError as exc:  # unreadable data fails the gate with the reason, not the run
            report.add_check(f"data:{name}", [Finding(str(exc), file=exc.file, line=exc.line, field=exc.field)])
    prompt_files = sorted(settings.prompts_dir.glob("*.yaml"))
    counter = find_token_counter(None)
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


def run_gate_evals(settings: Settings, changes: Changes | None, model: ModelUnderTest, *, all_cases: bool,
                   rows: int, cache_dir: Path, echo: Callable[[str], None] = print) -> tuple[list[dict], list[dict], dict]:
    """Run the selected cases and eval rows, from the cache where possible. Returns (cases, rows, stats)."""
    from evals.cache import ResultCache
    from evals.client import OpenAIClient
    from evals.metrics import exact_match, rouge_l, token_f1
    from evals.runner import cache_key, load_cases, parallel, read_eval_rows, run_case
    from llmops.prompts import load_all

    prompts = load_all(settings.prompts_dir)
    cases = load_cases(settings.root / "evals" / "cases", settings.prompts_dir)
    if not all_cases and changes is not None:
        changed_files = {str(settings.root / f) for f in changes.case_files} | set(changes.case_files)
        cases = [c for c in cases if "smoke" in c.tags or c.prompt in changes.prompts
                 or c.file in changed_files or str(Path(c.file).resolve()) in changed_files]
    cache = ResultCache(cache_dir)
    answer = prompts["answer"]
    params = answer.params.model_dump()
    eval_rows = read_eval_rows(settings.datasets_dir / "python-faq", rows)

    pending_cases, results = [], {}
    for case in cases:
        prompt = prompts[case.prompt]
        try:
            rendered = prompt.render(model.chat, **case.vars)
        except Exception as exc:  # noqa: BLE001 - any template error fails the case, with its message
            results[case.id] = {"id": case.id, "suite": case.suite, "tags": list(case.tags), "prompt_id": case.prompt,
                                "file": case.file, "line": case.line,
                                "prompt": "\n".join(m.content for m in prompt.messages), "output": "",
                                "passed": False, "cached": False,
                                "assertions": [{"type": "render", "passed": False,
                                                "message": f"prompt {case.prompt!r} does not render: {exc}"}]}
            continue
        key = cache_key(rendered, case, model.version, prompt.params.model_dump())
        hit = cache.get(key)
        if hit is not None:
            results[case.id] = {**hit, "cached": True}
        else:
            pending_cases.append((case, key))
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
        key = _row_key(rendered, model.version, params)
        hit = cache.get(key)
        if hit is not None:
            row_results[row["id"]] = hit["output"]
        else:
            pending_rows.append((row, key))

    if pending_cases or pending_rows:
        echo(f"    model calls: {len(pending_cases)} cases, {len(pending_rows)} rows "
             f"({cache.hits} from cache); serving {model.description}")
        with model.serve() as url, OpenAIClient(url, timeout=120, retries=2) as client:
            client.resolve_model()
            records = parallel(lambda item: run_case(client, item[0], prompts[item[0].prompt], model.version),
                               pending_cases, 4)
            for (case, key), record in zip(pending_cases, records, strict=True):
                cache.put(key, record)
                results[case.id] = {**record, "cached": False}

            def complete(item: tuple[dict, str]) -> str:
                row, _ = item
                return client.complete(row_prompts[row["id"]], max_tokens=params["max_tokens"],
                                       temperature=params["temperature"], stop=params["stop"])

            outputs = parallel(complete, pending_rows, 4)
            for (row, key), output in zip(pending_rows, outputs, strict=True):
                cache.put(key, {"output": output})
                row_results[row["id"]] = output
    else:
        echo(f"    all {len(cases)} cases and {len(eval_rows)} rows from cache; no model call")

    case_records = [results[c.id] for c in cases]
    for record in case_records:  # repo-relative paths: the report is committed and posted
        if record.get("file") and Path(record["file"]).is_absolute() and Path(record["file"]).is_relative_to(settings.root):
            record["file"] = Path(record["file"]).relative_to(settings.root).as_posix()
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
    from evals.runner import load_thresholds

    thresholds = load_thresholds(thresholds_path)
    base_cases = {c["id"]: c for c in (baseline.cases if baseline else [])}
    base_rows = {r["id"]: r for r in (baseline.info.get("rows", []) if baseline else [])}
    notes: list[Finding] = []
    metrics: dict[str, Metric] = {}

    def gated(name: str, head: float, base: float | None) -> Metric:
        gate = thresholds.for_metric(name)
        floors = [f for f in (gate.min, None if base is None or gate.max_drop is None else base - gate.max_drop)
                  if f is not None]
        floor = max(floors) if floors else None
        passed = None if floor is None else round(head, 9) >= round(floor, 9)
        return Metric(head=head, base=base, threshold=floor, passed=passed)

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
                rows: int = GATE_ROWS, echo: Callable[[str], None] = print) -> Report:
    started = time.perf_counter()
    report = Report(kind="pr-gate")
    changes = changed_files(settings.root, base) if base else None
    if changes:
        echo(f"==> {len(changes.files)} files changed against {base} ({changes.merge_base[:10]}): "
             f"datasets {changes.datasets or '-'}, prompts {changes.prompts or '-'}, "
             f"case files {len(changes.case_files)}, training config {'yes' if changes.training_config else 'no'}")
        static_checks(settings, changes, report)
    baseline, baseline_from = load_baseline(settings.root, base, baseline_path) if base or baseline_path else (None, "none")
    echo(f"==> baseline: {baseline_from}")
    model = resolve_model(settings, model_dir=model_dir, endpoint=endpoint, echo=echo)
    echo(f"==> evals against {model.description}")
    cases, row_records, stats = run_gate_evals(settings, changes, model, all_cases=all_cases, rows=rows,
                                               cache_dir=settings.cache_dir / "eval", echo=echo)
    report.cases = cases
    thresholds = settings.root / "evals" / "thresholds.yaml"
    report.metrics, notes = compute_metrics(cases, row_records, baseline, thresholds)
    if baseline is None:
        notes.append(Finding(f"no baseline at {baseline_from}: metrics are reported, not compared "
                             "(create it on main with `llmops gate baseline`)", severity="warning"))
    elif baseline.info.get("model_version") not in (None, model.version):
        notes.append(Finding(f"baseline was measured on {baseline.info.get('model_version')}, this run on "
                             f"{model.version}: deltas mix a model change with this PR's change", severity="warning"))
    report.add_check("new cases pass", new_case_findings(cases, baseline),
                     summary="a case the baseline does not have must pass on the model under test")
    failed_suites = [n for n, m in report.metrics.items() if m.passed is False]
    report.add_check("eval regressions", [Finding(
        f"{name}: {m.head:.3f} is below its floor {m.threshold:.3f} (base {m.base if m.base is None else round(m.base, 3)})",
        file="evals/thresholds.yaml", field=name) for name, m in report.metrics.items() if m.passed is False] + notes,
        summary=f"{len(report.metrics) - len(failed_suites)}/{len(report.metrics)} metrics within thresholds")
    report.info = {
        "base_ref": base or "-", "baseline": baseline_from, "model": model.description,
        "model_version": model.version, "changed": changes.files if changes else [],
        "rows": row_records, "eval": stats, "duration_s": round(time.perf_counter() - started, 2),
    }
    report.write(out_dir)
    return report


# --------------------------------------------------------------------------- benchmark


def bench_gate(settings: Settings, *, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Time the gate on a typical change (a prompt edit) in a scratch clone: cold cache, then unchanged re-run.

    The model under test (production, else the main job's candidate, else the untuned base model) is
    resolved first and timed apart: it is built once per machine.
    """
    import os
    import shutil
    import tempfile

    files = _git(settings.root, "ls-files", "--cached", "--others", "--exclude-standard").split("\n")
    with tempfile.TemporaryDirectory(prefix="llmops-bench-gate-") as tmp:
        repo = Path(tmp) / "repo"
        for rel in filter(None, files):
            if (settings.root / rel).is_file():
                (repo / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(settings.root / rel, repo / rel)
        ident = ["-c", "user.email=bench@llmops", "-c", "user.name=bench"]
        _git(repo, "init", "-q", "-b", "main")
        _git(repo, *ident, "add", "-A")
        _git(repo, *ident, "commit", "-qm", "main")
        _git(repo, "checkout", "-q", "-b", "change")
        prompt = repo / "prompts" / "answer.yaml"
        prompt.write_text(prompt.read_text().replace("You answer questions about the Python programming language.",
                                                     "You answer questions about the Python programming language "
                                                     "concisely."))
        scratch = Settings(root=repo, home=Path(tmp) / "home")
        # Share the built default model, not the result cache: the cold run must call the model.
        (scratch.home).mkdir(parents=True)
        start = time.perf_counter()
        model = resolve_model(settings, echo=lambda _: None)
        model_seconds = time.perf_counter() - start
        if settings.model_store.is_dir():
            os.symlink(settings.model_store, scratch.model_store)
        timings = {}
        for run in ("cold", "cached"):
            start = time.perf_counter()
            report = run_pr_gate(scratch, base="main", out_dir=Path(tmp) / run, model_dir=model.model_dir,
                                 endpoint=model.endpoint, echo=lambda _: None)
            timings[run] = round(time.perf_counter() - start, 2)
            echo(f"{run:6}: {timings[run]:6.2f} s  verdict {report.verdict}, {report.info['eval']}")
    return {"model": model.description, "model_ready_s": round(model_seconds, 2), **timings,
            "cases": report.info["eval"]["cases"], "rows": report.info["eval"]["rows"]}
