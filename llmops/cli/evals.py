"""The eval command: rule-based cases and reference metrics against any OpenAI-compatible endpoint.

    llmops eval --endpoint http://127.0.0.1:8000 --tags smoke
    llmops eval --model .llmops/registry/models/answer/v3 --dataset datasets/python-faq --limit 20
    llmops eval-base --config training/config.yaml --dataset datasets/python-faq --limit 40 --out base/
    llmops eval --model onnx/ --dataset datasets/python-faq --limit 40 --compare-base base/report.json

With --endpoint it evaluates a running server (ours, vLLM, TGI, a hosted API). With --model it
starts our server for that model folder on a free loopback port, evaluates it over HTTP the same
way, and stops it. `eval-base` measures the untuned base model, and --compare-base gates the tuned
one against it (the main pipeline's base-eval and eval stages). Writes report.json and report.md.

    llmops eval --endpoint $GATEWAY_URL --dataset datasets/python-faq --against production

--against judges the endpoint with the same gate against a registry version's own recorded eval
report (the nightly eval and the Kubernetes probe Jobs): each metric's floor becomes
max(min, recorded - max_drop) of evals/thresholds.yaml (evals/rule_evals.gate_value). The rules
are llmops/jobs/production_eval.py's, the same as registration's: dataset metrics only on the same
eval split (sha256) and rows; pass rates over the case ids both ran (a suite with cases production
did not run gets an `against.pass_rate.<suite>` metric over the common ones, a warning names the
rest). What cannot be compared is said in the report and makes the run inconclusive (exit 3),
never a pass. No `production` alias yet (a first release): the absolute floors only, said in the report.

Exit 0 when every gate passed, 1 when a threshold failed (unless --no-gate), 2 for bad input (case
files, flags, an unreachable endpoint), 3 inconclusive (--against: the recorded eval cannot be
compared, or there is no registry to read it from).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from llmops.errors import GateFailed, InputError

EXIT_INCONCLUSIVE = 3  # --against: the recorded eval could not be compared (0 pass, 1 gate failed, 2 bad input)
COMPARABLE_CHECK = "comparable with the recorded eval"


def _split(values: tuple[str, ...]) -> list[str]:
    """`--tags smoke,refusal --tags json` -> ["smoke", "refusal", "json"]."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


@click.command("eval")
@click.option("--endpoint", metavar="URL", help="Root URL of an OpenAI-compatible server.")
@click.option("--model", "model_dir", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="A model folder to serve locally (serving.app.running_server) and evaluate.")
@click.option("--backend", default="onnx", show_default=True, help="Serving backend for --model.")
@click.option("--model-name", default=None, help="The requests' `model` field (default: the server's first model).")
@click.option("--api-key", envvar="LLMOPS_EVAL_API_KEY", default=None,
              help="Bearer token for the endpoint (env LLMOPS_EVAL_API_KEY).")
@click.option("--cases", "cases_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of case files (default: evals/cases).")
@click.option("--prompts", "prompts_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of prompt files (default: prompts).")
@click.option("--dataset", "dataset_dir", type=click.Path(path_type=Path), default=None,
              help="Dataset folder whose eval.jsonl gets ROUGE-L/F1/EM (e.g. datasets/python-faq).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N dataset rows.")
@click.option("--tags", multiple=True, help="Only cases with any of these tags (comma-separated or repeated).")
@click.option("--prompt", "prompt_ids", multiple=True, help="Only cases using these prompt ids.")
@click.option("--thresholds", "thresholds_path", type=click.Path(path_type=Path), default=None,
              help="Gates file (default: evals/thresholds.yaml).")
@click.option("--baseline", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="A previous eval report.json: adds base/delta and the max-drop gates.")
@click.option("--workers", type=click.IntRange(min=1, max=32), default=4, show_default=True,
              help="Parallel requests.")
@click.option("--retries", type=click.IntRange(min=0), default=3, show_default=True,
              help="Extra attempts per request on connection errors and 429/502/503/504.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Where report.json and report.md go (default: .llmops/reports/eval).")
@click.option("--compare-base", "compare_base", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              default=None, metavar="REPORT",
              help="A base model's report.json (from `llmops eval-base`): also gate on the thresholds' base_comparison "
                   "rules (the tuned model must beat it) and write comparison.md beside the report.")
@click.option("--against", metavar="REF", default=None,
              help="A registry alias or version (e.g. production) whose recorded eval report is the baseline: "
                   "the max_drop gates apply where it was measured on the same eval split (sha256) and rows, pass "
                   "rates over the case ids both ran; what cannot be compared exits 3 (inconclusive). No such "
                   "alias: the floors only.")
@click.option("--no-gate", is_flag=True, help="Report only: exit 0 even when a threshold fails.")
def eval_cmd(endpoint: str | None, model_dir: Path | None, backend: str, model_name: str | None,
             api_key: str | None, cases_dir: Path | None, prompts_dir: Path | None, dataset_dir: Path | None,
             limit: int | None, tags: tuple[str, ...], prompt_ids: tuple[str, ...],
             thresholds_path: Path | None, baseline: Path | None, workers: int, retries: int,
             out_dir: Path | None, compare_base: Path | None, against: str | None,
             no_gate: bool) -> None:
    """Evaluate an endpoint (or a model folder served locally) with the eval cases and dataset.

    Exit codes: 0 every gate passed; 1 a gate failed; 2 bad input; 3 inconclusive (--against: the
    recorded eval could not be compared on the same eval split and rows, had nothing in common with
    this run, or no registry).
    """
    from evals.rule_evals import DEFAULT_THRESHOLDS, run_eval
    from llmops.report import Report
    from llmops.settings import Settings

    settings = Settings.load()
    cases_dir = cases_dir or settings.root / "evals" / "cases"
    prompts_dir = prompts_dir or settings.prompts_dir
    out_dir = out_dir or settings.home / "reports" / "eval"
    from llmops.cli.endpoint import endpoint_or_served

    base_report = Report.load(baseline) if baseline else None
    comparable: list[Any] | None = None
    recorded_base = None  # --against: the comparable part of the recorded eval (llmops/jobs/production_eval.py)
    if against is not None:
        if baseline is not None:
            raise InputError("give --baseline or --against, not both", field="against")
        from llmops.jobs.production_eval import (
            comparable_baseline,
            planned_split,
            recorded_eval,
            run_baseline,
            selected_cases,
        )

        what, recorded, comparable = recorded_eval(settings, against)
        if recorded is not None:
            cases = selected_cases(cases_dir, prompts_dir, _split(tags), _split(prompt_ids))
            split = planned_split(dataset_dir, limit, recorded) if dataset_dir is not None else None
            recorded_base, more = comparable_baseline(recorded, what, cases, split, me="this run")
            recorded_base.info["selected"] = {"tags": _split(tags), "prompt_ids": _split(prompt_ids)}
            comparable += more
            base_report = run_baseline(recorded_base, cases)
            if split is not None and "dataset" in recorded_base.info:
                limit = split["rows"]
    with endpoint_or_served(endpoint, model_dir, backend) as url:
        report = run_eval(
            url, cases_dir, prompts_dir, dataset_dir, model_name,
            tags=_split(tags), prompt_ids=_split(prompt_ids), limit=limit,
            thresholds_path=thresholds_path or DEFAULT_THRESHOLDS,
            baseline=base_report,
            api_key=api_key, workers=workers, retries=retries,
            model_version=str(model_dir) if model_dir is not None else None,
        )
    if comparable is not None:
        if recorded_base is not None and base_report is not None:  # suites compared over fewer cases than ran
            from evals.rule_evals import load_thresholds
            from llmops.jobs.production_eval import gate_against

            found, judged = gate_against(report, recorded_base, load_thresholds(thresholds_path or DEFAULT_THRESHOLDS),
                                         "against", who=str(against), skip=list(base_report.metrics))
            report.metrics.update(judged)
            comparable += [f for f in found if f.field not in judged]  # a regression is its failed metric
        report.add_check(COMPARABLE_CHECK, comparable, summary=f"baseline: {against}")
    if model_dir is not None:
        report.info["model_dir"] = os.fspath(model_dir)
    table = None
    if compare_base is not None:
        from evals.compare import apply_base_comparison

        table = apply_base_comparison(report, Report.load(compare_base), thresholds=thresholds_path)
    json_path, md_path = report.write(out_dir)
    if table is not None:
        (out_dir / "comparison.md").write_text(table + "\n")
        click.echo(table)
    _summary(report)
    click.echo(f"wrote {json_path} and {md_path}")
    if not report.passed and not no_gate:
        failed = sorted(n for n, m in report.metrics.items() if m.passed is False)
        failed += [f"{c.name}: {f.message}" for c in report.checks if not c.passed for f in c.findings
                   if f.severity == "error" and c.name != COMPARABLE_CHECK]
        if not failed:  # every gate that could judge passed; the comparison with the recorded eval could not
            why = [f.message for c in report.checks if c.name == COMPARABLE_CHECK for f in c.findings
                   if f.severity == "error"]
            click.echo("inconclusive (exit 3), not a pass:\n  " + "\n  ".join(why) + f"\n  (see {md_path})", err=True)
            raise click.exceptions.Exit(EXIT_INCONCLUSIVE)
        raise GateFailed("eval gates failed:\n  " + "\n  ".join(failed[:12]) + f"\n  (see {md_path})")


@click.command("eval-base")
@click.option("--config", "config_path", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              default=Path("training/config.yaml"), show_default=True,
              help="The training config whose base model (`base_model`) to evaluate.")
@click.option("--dataset", "dataset_dir", type=click.Path(path_type=Path), default=Path("datasets/python-faq"),
              show_default=True, help="Dataset folder with eval.jsonl.")
@click.option("--limit", type=click.IntRange(min=1), default=40, show_default=True, help="At most N dataset rows.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Where the report goes.")
def eval_base_cmd(config_path: Path, dataset_dir: Path, limit: int, out_dir: Path) -> None:
    """Evaluate the untuned base model of a training config, exported to ONNX and served like a candidate,
    on the same cases; `llmops eval --compare-base OUT/report.json` then gates a tuned model against it.

    Reused from evals/baseline/base-model.json, else from the cache, when its eval key (model, cases,
    prompts, split, limit, eval code) matches. Reports only: the base model is not gated.
    """
    from llmops.jobs.base_eval import base_eval_of_config
    from llmops.settings import Settings

    settings = Settings.load()
    report = base_eval_of_config(settings, config_path, dataset_dir=dataset_dir, limit=limit, echo=click.echo)
    json_path, md_path = report.write(out_dir)
    _summary(report)
    click.echo(f"wrote {json_path} and {md_path} (the base model's report: not gated)")


def _summary(report: Any) -> None:
    failed_cases = [c for c in report.cases if not c["passed"]]
    click.echo(f"{len(report.cases) - len(failed_cases)}/{len(report.cases)} cases passed")
    for name, metric in sorted(report.metrics.items()):
        gate = "  (not gated)" if metric.passed is None else ("  ok" if metric.passed else "  FAILED")
        floor = "" if metric.threshold is None else f" (min {metric.threshold:.3f})"
        click.echo(f"  {name:28s} {metric.head:.3f}{floor}{gate}")
