"""Run the rule-based eval cases and the dataset's eval split against an OpenAI-compatible endpoint.

    llmops eval --endpoint http://127.0.0.1:8000 --dataset datasets/python-faq --tags smoke

`run_eval()` loads and validates every case file in `evals/cases/` (a YAML list of cases), renders
each case's prompt with its vars, completes it over HTTP with the prompt's own params, runs the
case's assertions and records the outcome in a `Report` (kind "eval"). Pass rates per suite
become metrics gated by `evals/thresholds.yaml`. With a dataset folder it also completes
`prompts/answer.yaml` for each row of `eval.jsonl` and reports ROUGE-L, token F1 and exact match
against the reference answers. With a baseline report every metric also gets a delta and a
max-drop gate.

`route="chat"` sends the cases of the prompt a server serves through /v1/chat/completions instead
(question as the user message, context as a system message): what the server renders with its
own prompt file is what is judged, as the chat page and OpenAI clients use it. The release's
pre-promotion analysis runs both routes.

A case whose request the server rejected (an HTTP error) fails with the server's message; an
endpoint that cannot be reached at all aborts the run (EndpointError, exit 2), since then no
number would mean anything.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evals.assertions import ASSERTIONS, AssertionSpec, run_assertion
from evals.client import EndpointError, OpenAIClient
from evals.metrics import corpus_scores
from llmops.config_files import locate
from llmops.errors import InputError
from llmops.files import sha256_file
from llmops.prompts import Prompt, load_all
from llmops.report import Finding, Metric, Report

DEFAULT_THRESHOLDS = Path(__file__).with_name("thresholds.yaml")
DATASET_PROMPT = "answer"
CHAT_VARS = frozenset({"question", "context"})  # what a chat request can carry to the served prompt
Route = Literal["completions", "chat"]
Tag = Literal["smoke", "refusal", "json", "grounding", "quality", "safety"]


# ---------------------------------------------------------------- case files


class EvalCase(BaseModel):
    """One eval case: render `prompt` with `vars`, complete it, and check the output with `assert`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Unique across all case files.")
    prompt: str = Field(description="A prompt id: prompts/<id>.yaml.")
    vars: dict[str, Any] = Field(default_factory=dict, description="Values for the prompt's variables.")
    assert_: list[AssertionSpec] = Field(alias="assert", min_length=1, description="Checks on the output.")
    tags: list[Tag] = Field(default_factory=list, description="Selectors: `llmops eval --tags smoke`.")
    suite: str | None = Field(None, description="Pass-rate group; defaults to the file's name.")
    description: str = Field("", description="Why the case exists (shown nowhere else).")
    file: str = Field("", exclude=True)
    line: int | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _assertions_fit(self) -> EvalCase:
        for i, spec in enumerate(self.assert_):
            try:
                spec.check_value()
            except ValueError as exc:
                raise ValueError(f"assert[{i}] ({spec.type}): {exc}") from None
        return self


def _loc(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(node: yaml.Node, loc: Sequence[Any]) -> int | None:
    """1-based line of the YAML node at `loc` (keys and list indices), or of its nearest parent."""
    return locate(node, loc)[1]


def load_case_file(path: Path, prompts: dict[str, Prompt]) -> list[EvalCase]:
    """Validate one case file (a YAML list of cases) against the schema and the known prompts."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"invalid YAML: {exc}", file=str(path),
                         line=None if mark is None else mark.line + 1) from None
    if data is None:
        return []
    if not isinstance(data, list) or not isinstance(root, yaml.SequenceNode):
        raise InputError("a case file must be a YAML list of cases", file=str(path), line=1)
    cases = []
    for index, (item, node) in enumerate(zip(data, root.value, strict=True)):
        case_id = item.get("id") if isinstance(item, dict) else None
        name = f"case {case_id!r}" if case_id else f"case #{index + 1}"
        if not isinstance(item, dict):
            raise InputError(f"{name}: a case must be a mapping", file=str(path), line=_line_of(node, []))
        try:
            case = EvalCase.model_validate(item)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = list(err["loc"])
            msg = (f"unknown key {loc[-1]!r}" if err["type"] == "extra_forbidden"
                   else err["msg"].removeprefix("Value error, "))
            raise InputError(f"{name}: {msg}", file=str(path), line=_line_of(node, loc),
                             field=_loc(loc) or None) from None
        case.file, case.line = str(path), _line_of(node, [])
        if case.suite is None:
            case.suite = path.stem
        prompt = prompts.get(case.prompt)
        if prompt is None:
            raise InputError(f"{name}: unknown prompt id {case.prompt!r}; known: {', '.join(sorted(prompts))}",
                             file=str(path), line=_line_of(node, ["prompt"]), field="prompt")
        unknown = sorted(set(case.vars) - set(prompt.variables))
        if unknown:
            raise InputError(f"{name}: prompt {prompt.id!r} has no variable {unknown[0]!r}; it takes "
                             f"{', '.join(prompt.variables)}", file=str(path),
                             line=_line_of(node, ["vars", unknown[0]]), field=f"vars.{unknown[0]}")
        try:
            prompt.check_vars(case.vars)
        except InputError as exc:
            raise InputError(f"{name}: {exc}", file=str(path), line=_line_of(node, ["vars"]),
                             field=f"vars.{exc.field}" if exc.field else "vars") from None
        for i, spec in enumerate(case.assert_):
            if spec.type == "grounded-in-context" and not case.vars.get("context"):
                raise InputError(f"{name}: grounded-in-context needs a `context` var",
                                 file=str(path), line=_line_of(node, ["assert", i]), field=f"assert[{i}]")
        cases.append(case)
    return cases


def load_cases(cases_dir: Path, prompts_dir: Path) -> list[EvalCase]:
    """Every case in `cases_dir/*.yaml`, validated; ids must be unique across files."""
    cases_dir = Path(cases_dir)
    if not cases_dir.is_dir():
        raise InputError("cases folder not found", file=str(cases_dir))
    prompts = load_all(Path(prompts_dir))
    cases: list[EvalCase] = []
    seen: dict[str, EvalCase] = {}
    for path in sorted([*cases_dir.glob("*.yaml"), *cases_dir.glob("*.yml")]):
        for case in load_case_file(path, prompts):
            if case.id in seen:
                first = seen[case.id]
                raise InputError(f"case id {case.id!r} is already used at {first.file}:{first.line}",
                                 file=case.file, line=case.line, field="id")
            seen[case.id] = case
            cases.append(case)
    if not cases:
        raise InputError("no eval cases found (expected *.yaml lists of cases)", file=str(cases_dir))
    return cases


def select_cases(cases: Iterable[EvalCase], tags: Sequence[str] = (),
                 prompt_ids: Sequence[str] = ()) -> list[EvalCase]:
    """Cases carrying any of `tags` and using any of `prompt_ids` (an empty filter keeps all)."""
    return [c for c in cases
            if (not tags or set(tags) & set(c.tags)) and (not prompt_ids or c.prompt in prompt_ids)]


# ---------------------------------------------------------------- thresholds


class Gate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min: float | None = Field(None, description="Absolute floor for the metric's value.")
    max_drop: float | None = Field(None, ge=0, description="Largest allowed fall below the baseline.")


class BaseComparison(BaseModel):
    """How the main job compares the tuned model with the untuned base model (same cases, same serving)."""

    model_config = ConfigDict(extra="forbid")
    must_beat: list[str] = Field(default_factory=list, description="Metrics the tuned model must raise.")
    no_drop: list[str] = Field(default_factory=list, description="Metrics the tuned model must not lower.")
    report: list[str] = Field(default_factory=list, description="Metrics compared and reported, not gated.")


class Thresholds(BaseModel):
    """evals/thresholds.yaml: see the file's comments for what each number means."""

    model_config = ConfigDict(extra="forbid")
    default_suite: Gate = Field(default_factory=Gate, description="Gate of a suite not listed in suites.")
    suites: dict[str, Gate] = Field(default_factory=dict, description="suite name -> gate on its pass rate.")
    metrics: dict[str, Gate] = Field(default_factory=dict, description="dataset metric -> gate.")
    # Sections of other suites, validated by their own loaders (evals/deepeval_metrics.py, evals/safety_runner.py).
    deepeval: dict[str, Any] = Field(default_factory=dict, description="DeepEval suite thresholds.")
    safety: dict[str, Any] = Field(default_factory=dict, description="Safety suite thresholds.")
    base_comparison: BaseComparison = Field(default_factory=BaseComparison,
                                            description="The main job's tuned-versus-base gate.")

    def for_metric(self, name: str) -> Gate:
        if name.startswith("pass_rate."):
            return self.suites.get(name.removeprefix("pass_rate."), self.default_suite)
        return self.metrics.get(name.removeprefix("dataset."), Gate())


def load_thresholds(path: Path) -> Thresholds:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text) or {}
        root = yaml.compose(text)
    except FileNotFoundError:
        raise InputError("thresholds file not found", file=str(path)) from None
    except yaml.YAMLError as exc:
        raise InputError(f"invalid YAML: {exc}", file=str(path)) from None
    try:
        return Thresholds.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = list(err["loc"])
        msg = f"unknown key {loc[-1]!r}" if err["type"] == "extra_forbidden" else err["msg"]
        raise InputError(msg, file=str(path), line=_line_of(root, loc) if root else None,
                         field=_loc(loc)) from None


def gate_value(gate: Gate, value: float, base: float | None) -> Metric:
    """`value` against its effective floor: the larger of `gate.min` and `base - gate.max_drop`.

    With neither, the metric is reported only (passed None). A NaN value fails a floor: a metric
    that could not be measured is never a pass. The one floor rule: the eval runner and the PR
    gate both call it.
    """
    floors = [f for f in (gate.min, None if base is None or gate.max_drop is None else base - gate.max_drop)
              if f is not None]
    floor = max(floors) if floors else None
    # Rounded so that a pass rate equal to its floor is not failed by float noise (0.1 + 0.2 != 0.3).
    passed = None if floor is None else (not math.isnan(value) and round(value, 9) >= round(floor, 9))
    return Metric(head=value, base=base, threshold=floor, passed=passed)


def gate_metric(name: str, value: float, thresholds: Thresholds, baseline: Report | None) -> Metric:
    """Metric `name` gated by its entry in `thresholds` against the baseline report's value."""
    base_metric = baseline.metrics.get(name) if baseline else None
    return gate_value(thresholds.for_metric(name), value, base_metric.head if base_metric else None)


# ---------------------------------------------------------------- running


def cache_key(rendered_prompt: str, case: EvalCase, model_version: str, params: dict[str, Any]) -> str:
    """sha256 of what decides a case's result: prompt text, case, model, params, assertion versions."""
    payload = {
        "prompt": rendered_prompt,
        "case": case.model_dump(mode="json", by_alias=True),
        "model": model_version,
        "params": params,
        "assertions": {spec.type: ASSERTIONS[spec.type].version for spec in case.assert_},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _render_failure(case: EvalCase, prompt: Prompt, exc: Exception) -> dict[str, Any]:
    return {"id": case.id, "suite": case.suite, "tags": list(case.tags), "prompt_id": case.prompt,
            "file": case.file, "line": case.line, "prompt": "\n".join(m.content for m in prompt.messages),
            "output": "", "passed": False,
            "assertions": [{"type": "render", "passed": False,
                            "message": f"prompt {case.prompt!r} does not render: {exc}"}]}


def chat_messages(case: EvalCase) -> list[dict[str, str]]:
    """The chat request of a case of the served prompt: context as a system message, the question as
    the user's (serving/app.py maps them back into the prompt's variables)."""
    messages = [{"role": "system", "content": str(case.vars["context"])}] if case.vars.get("context") else []
    return [*messages, {"role": "user", "content": str(case.vars["question"])}]


def _rendered(case: EvalCase, prompt: Prompt, chat_format: Any, route: Route) -> str:
    if route == "chat":  # the server renders; what is sent (and keyed) is the messages
        return "chat:" + json.dumps(chat_messages(case), ensure_ascii=False)
    return prompt.render(chat_format, **case.vars)


def run_case(client: OpenAIClient, case: EvalCase, prompt: Prompt, model_version: str,
             route: Route = "completions") -> dict[str, Any]:
    try:
        rendered = _rendered(case, prompt, client.chat_format, route)
    except Exception as exc:  # noqa: BLE001 - any template error fails the case, with its message
        return _render_failure(case, prompt, exc)
    params = prompt.params.model_dump()
    record: dict[str, Any] = {
        "id": case.id, "suite": case.suite, "tags": list(case.tags), "prompt_id": case.prompt,
        "file": case.file, "line": case.line, "prompt": rendered,
        "cache_key": cache_key(rendered, case, model_version, params),
    }
    started = time.perf_counter()
    try:
        output = (client.chat(chat_messages(case), **params) if route == "chat"
                  else client.complete(rendered, **params))
    except EndpointError as exc:
        if exc.status is None:
            raise  # unreachable endpoint: abort the run
        record.update(passed=False, output="", latency_s=time.perf_counter() - started,
                      assertions=[{"type": "request", "passed": False, "message": str(exc)}])
        return record
    record["latency_s"] = round(time.perf_counter() - started, 4)
    results = []
    for spec in case.assert_:
        outcome = run_assertion(spec, output, case.vars)
        results.append({"type": spec.type, "passed": outcome.passed, "message": outcome.message})
    record.update(output=output, passed=all(r["passed"] for r in results), assertions=results)
    return record


class CaseRun:
    """The eval cases against one model, with an optional result cache: `lookup` takes what the
    cache already holds (no model needed), `run` calls the model for the rest and stores them.
    `llmops eval` runs without a cache; `llmops gate pr` with one, so an unchanged re-run makes no
    model call at all."""

    def __init__(self, cases: list[EvalCase], prompts: dict[str, Prompt], model_version: str,
                 cache: Any = None, route: Route = "completions") -> None:
        self.cases, self.prompts, self.version, self.cache = cases, prompts, model_version, cache
        self.route = route
        self.results: dict[str, dict[str, Any]] = {}
        self.pending: list[EvalCase] = list(cases)

    def lookup(self, chat: Any) -> None:
        """Fill `results` from the cache (and with render failures) for the model's chat format."""
        pending = []
        for case in self.pending:
            prompt = self.prompts[case.prompt]
            try:
                rendered = _rendered(case, prompt, chat, self.route)
            except Exception as exc:  # noqa: BLE001 - any template error fails the case, with its message
                self.results[case.id] = {**_render_failure(case, prompt, exc), "cached": False}
                continue
            hit = None if self.cache is None else self.cache.get(
                cache_key(rendered, case, self.version, prompt.params.model_dump()))
            if hit is not None:
                self.results[case.id] = {**hit, "cached": True}
            else:
                pending.append(case)
        self.pending = pending

    def run(self, client: OpenAIClient, workers: int) -> list[dict[str, Any]]:
        """Run what is pending against `client`; returns every case's record, in case order."""
        records = parallel(lambda c: run_case(client, c, self.prompts[c.prompt], self.version, self.route),
                           self.pending, workers)
        for case, record in zip(self.pending, records, strict=True):
            if self.cache is not None and "cache_key" in record:
                self.cache.put(record["cache_key"], record)
            self.results[case.id] = {**record, "cached": False}
        self.pending = []
        return [self.results[c.id] for c in self.cases]


def parallel(fn, items: Sequence[Any], workers: int) -> list[Any]:
    """fn over items on a thread pool, results in input order; the first exception cancels the rest."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(fn, item) for item in items]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in done:
            if future.exception() is not None:
                pool.shutdown(wait=True, cancel_futures=True)
                raise future.exception()
        return [f.result() for f in futures]


def read_eval_rows(dataset_dir: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of `dataset_dir/eval.jsonl` (id, question, answer, optional context), first `limit` rows."""
    from llmops.dataset import read_jsonl  # the project's one JSONL reader: errors name file and line

    path = Path(dataset_dir) / "eval.jsonl"
    if not path.is_file():
        raise InputError("dataset eval split not found", file=str(path))
    rows = []
    for lineno, row in read_jsonl(path):
        if not isinstance(row, dict):
            raise InputError("a row must be a JSON object", file=str(path), line=lineno)
        for name in ("id", "question", "answer"):
            if not isinstance(row.get(name), str) or not row[name].strip():
                raise InputError(f"row needs a non-empty string {name!r}", file=str(path), line=lineno, field=name)
        if row.get("context") is not None and not isinstance(row["context"], str):
            raise InputError("context must be a string", file=str(path), line=lineno, field="context")
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise InputError("the eval split has no rows", file=str(path))
    return rows


def run_rows(client: OpenAIClient, prompt: Prompt, rows: list[dict[str, Any]],
                 workers: int) -> tuple[dict[str, float], list[dict[str, Any]]]:
    params = prompt.params

    def one(row: dict[str, Any]) -> tuple[str, str | None]:
        values = {"question": row["question"]}
        if row.get("context"):
            values["context"] = row["context"]
        try:
            return client.complete(prompt.render(client.chat_format, **values), **params.model_dump()), None
        except EndpointError as exc:
            if exc.status is None:
                raise
            # A row the server rejects (e.g. longer than the model's context) scores 0, like a
            # wrong answer: skipping it would raise the mean by hiding the failure.
            return "", str(exc)

    results = parallel(one, rows, workers)
    scores = corpus_scores([o.strip() for o, _ in results], [r["answer"] for r in rows])
    samples = []
    for row, (output, error) in zip(rows, results, strict=True):
        sample = {"id": row["id"], "output": output, "reference": row["answer"]}
        if error:
            sample["error"] = error
        samples.append(sample)
    return scores, samples


def run_eval(base_url: str, cases_dir: Path, prompts_dir: Path, dataset_dir: Path | None = None,
             model_name: str | None = None, *, tags: Sequence[str] = (), prompt_ids: Sequence[str] = (),
             limit: int | None = None, thresholds_path: Path | None = None, baseline: Report | None = None,
             api_key: str | None = None, workers: int = 4, model_version: str | None = None,
             timeout: float = 120.0, retries: int = 3, route: Route = "completions",
             served_prompt: Prompt | None = None) -> Report:
    """Evaluate the endpoint at `base_url`; returns a Report of kind "eval" (it does not write it).

    base_url: root of an OpenAI-compatible server. cases_dir: folder of case files.
    prompts_dir: folder of prompt files. dataset_dir: a dataset folder with eval.jsonl, or None.
    model_name: the request's `model` field (None: the server's first model).
    tags / prompt_ids: keep only cases with any of these tags / prompts.
    limit: at most this many dataset rows. thresholds_path: gates (default evals/thresholds.yaml).
    baseline: a previous eval report; gives each metric a base, a delta and a max-drop gate.
    workers: parallel requests. model_version: what the cache key names (default: the model name).
    timeout: seconds per request. retries: extra attempts on connection errors and 429/502/503/504.
    route: "chat" sends the cases of `served_prompt` (the prompt the server serves, whose params
    are sent) through /v1/chat/completions; cases of other prompts are left out.
    """
    started = time.perf_counter()
    thresholds_path = Path(thresholds_path or DEFAULT_THRESHOLDS)
    thresholds = load_thresholds(thresholds_path)
    prompts = load_all(Path(prompts_dir))
    cases = select_cases(load_cases(cases_dir, prompts_dir), tags, prompt_ids)
    if route == "chat":
        if served_prompt is None:
            raise InputError("a chat-route eval needs the served prompt", field="served_prompt")
        prompts = {**prompts, served_prompt.id: served_prompt}
        cases = [c for c in cases if c.prompt == served_prompt.id and "question" in c.vars
                 and set(c.vars) <= CHAT_VARS]
    if not cases:
        raise InputError(f"no eval case has tags {list(tags)} and prompt ids {list(prompt_ids)}",
                         file=str(cases_dir))
    rows = read_eval_rows(dataset_dir, limit) if dataset_dir is not None else []
    if rows and DATASET_PROMPT not in prompts:
        raise InputError(f"the dataset eval needs prompts/{DATASET_PROMPT}.yaml", file=str(prompts_dir))

    report = Report(kind="eval")
    with OpenAIClient(base_url, api_key=api_key, model=model_name, timeout=timeout, retries=retries) as client:
        model = client.resolve_model()  # once, before the threads share the client
        version = model_version or model
        report.cases = CaseRun(cases, prompts, version, route=route).run(client, workers)
        by_suite: dict[str, list[bool]] = defaultdict(list)
        for record in report.cases:
            by_suite[record["suite"]].append(record["passed"])
        for suite, outcomes in sorted(by_suite.items()):
            name = f"pass_rate.{suite}"
            report.metrics[name] = gate_metric(name, sum(outcomes) / len(outcomes), thresholds, baseline)
        samples: list[dict[str, Any]] = []
        if rows:
            scores, samples = run_rows(client, prompts[DATASET_PROMPT], rows, workers)
            for metric, value in scores.items():
                name = f"dataset.{metric}"
                report.metrics[name] = gate_metric(name, value, thresholds, baseline)

    ungated = sorted(n for n, m in report.metrics.items() if m.passed is None)
    report.add_check("eval gates", [] if not ungated else [Finding(
        f"reported, not gated (no `min` here and no baseline to compare with): {', '.join(ungated)}",
        file=str(thresholds_path), severity="warning")],
        summary=f"{len(report.metrics) - len(ungated)}/{len(report.metrics)} metrics gated")
    report.info = {
        "endpoint": base_url,
        "model": model,
        "model_version": version,
        "cases_dir": str(cases_dir),
        "selected": {"tags": list(tags), "prompt_ids": list(prompt_ids),
                     **({"route": route} if route != "completions" else {})},
        "suites": {s: {"cases": len(o), "passed": sum(o)} for s, o in sorted(by_suite.items())},
        "prompts": {pid: prompts[pid].sha256 for pid in sorted({c.prompt for c in cases} |
                                                               ({DATASET_PROMPT} if rows else set()))},
        "thresholds": {"file": str(thresholds_path), "sha256": sha256_file(thresholds_path)},
        "assertion_versions": {name: a.version for name, a in sorted(ASSERTIONS.items())},
        "duration_s": round(time.perf_counter() - started, 3),
    }
    if rows:
        report.info["dataset"] = {"dir": str(dataset_dir), "rows": len(rows),
                                  "rejected": sum(1 for x in samples if "error" in x),
                                  "sha256": sha256_file(Path(dataset_dir) / "eval.jsonl"), "samples": samples}
    if baseline is not None:
        report.info["base_ref"] = baseline.info.get("model_version", baseline.created)
        report.add_check("baseline comparable", _baseline_findings(report, baseline))
    return report


def _baseline_findings(head: Report, base: Report) -> list[Finding]:
    """Warnings where a delta compares different things (other case selection or dataset rows)."""
    findings = []
    if base.info.get("selected") not in (None, head.info["selected"]):
        findings.append(Finding(f"baseline selected {base.info['selected']}, this run {head.info['selected']}: "
                                "pass-rate deltas compare different case sets", severity="warning"))
    base_rows = base.info.get("dataset", {}).get("rows")
    head_rows = head.info.get("dataset", {}).get("rows")
    if base_rows is not None and head_rows is not None and base_rows != head_rows:
        findings.append(Finding(f"baseline scored {base_rows} dataset rows, this run {head_rows}",
                                severity="warning"))
    return findings
