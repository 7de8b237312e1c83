"""Every merge-pipeline gate can fail (issue 11): parity's prompt count, a gate with nothing gated, the leakage
stage, and the eval and DeepEval reports judged against production's recorded ones on the same split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.rule_evals import load_thresholds
from llmops.errors import GateFailed, InputError
from llmops.jobs.pipeline import PipelineSpec, load_pipeline, load_pipelines, write_spec
from llmops.jobs.production_eval import compare_deepeval_with_production, compare_eval_with_production
from llmops.jobs.register import gate_outcome, register_candidate
from llmops.prompts import load_prompt
from llmops.registry import Registry
from llmops.report import Metric, Report
from llmops.settings import Settings
from serving.export import MIN_PARITY_PROMPTS, parity_prompts
from tests.conftest import PIPELINE_REPO_PARTS, copy_repo_parts

SPLIT = "5" * 64


# ---------------------------------------------------------------- parity


def parity_findings(spec: PipelineSpec, root: Path) -> list[str]:
    """What keeps a pipeline's export stage from running parity on >= MIN_PARITY_PROMPTS eval-split prompts."""
    out = []
    for name, stage in spec.stages.items():
        argv = stage.cmd.split()
        if argv[0] != "export":
            continue
        opts = dict(zip(argv[1::2], argv[2::2], strict=False))
        source = opts.get("--prompts-from", "")
        if not source.endswith("eval.jsonl") or not (root / source).is_file():
            out.append(f"{name}: parity prompts not from an eval split ({source or 'the prompt examples'})")
        if int(opts.get("--parity-n", 16)) < MIN_PARITY_PROMPTS:
            out.append(f"{name}: --parity-n {opts['--parity-n']} < {MIN_PARITY_PROMPTS}")
    return out


def test_both_pipelines_run_parity_on_16_eval_split_prompts(repo_root: Path, tmp_path: Path) -> None:
    text = (repo_root / "pipeline.yaml").read_text()
    for spec in load_pipelines(repo_root / "pipeline.yaml").values():
        assert parity_findings(spec, repo_root) == []
    # The pipeline as it was (8 prompts) fails the check, in both pipelines.
    old = tmp_path / "pipeline.yaml"
    old.write_text(text.replace("--parity-n 16", "--parity-n 8"))
    assert [len(parity_findings(s, repo_root)) for s in load_pipelines(old).values()] == [1, 1]


def test_parity_refuses_an_eval_split_with_fewer_rows_than_asked(repo_root: Path, tmp_path: Path) -> None:
    prompt = load_prompt("answer", repo_root / "prompts")
    split = repo_root / "datasets" / "python-faq" / "eval.jsonl"
    assert len(parity_prompts(prompt, split, MIN_PARITY_PROMPTS)) == MIN_PARITY_PROMPTS
    short = tmp_path / "eval.jsonl"
    short.write_text("".join(split.read_text().splitlines(keepends=True)[:10]))
    with pytest.raises(InputError, match=r"asked for 16 prompts but the eval split has 10 rows") as err:
        parity_prompts(prompt, short, MIN_PARITY_PROMPTS)
    assert err.value.field == "parity_n" and err.value.file == str(short)
    short.write_text("")
    with pytest.raises(InputError, match="no parity prompts"):
        parity_prompts(prompt, short, MIN_PARITY_PROMPTS)


# ---------------------------------------------------------------- nothing gated is not a pass


def write_report(path: Path, report: Report) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict()))
    return path


def test_a_gate_whose_metrics_are_all_ungated_is_inconclusive(tmp_path: Path) -> None:
    ungated = Report(kind="eval", metrics={"pass_rate.quality": Metric(head=0.1), "dataset.rouge_l": Metric(head=0.0)})
    assert ungated.verdict == "pass"  # what the report says of itself...
    outcome, findings = gate_outcome(write_report(tmp_path / "a" / "report.json", ungated))
    assert outcome == "inconclusive" and "none of its 2 metrics was gated" in findings[0].message  # ...is not a pass
    gated = Report(kind="eval", metrics={"pass_rate.quality": Metric(head=0.5, threshold=0.41, passed=True),
                                         "dataset.exact_match": Metric(head=0.0)})
    assert gate_outcome(write_report(tmp_path / "b" / "report.json", gated)) == ("pass", [])
    leaked = Report(kind="leakage", metrics={"leakage.canary_leak_rate": Metric(head=0.2, threshold=0.0, passed=False)})
    assert gate_outcome(write_report(tmp_path / "c" / "report.json", leaked))[0] == "fail"
    checks_only = Report(kind="data-check")  # a gate of checks alone (the data check) is judged by them
    checks_only.add_check("schema", [])
    assert gate_outcome(write_report(tmp_path / "d" / "report.json", checks_only)) == ("pass", [])


def test_the_merge_pipeline_gates_on_the_leakage_canary_check(repo_root: Path) -> None:
    spec = load_pipeline(repo_root / "pipeline.yaml", "merge")
    assert spec.stages["leakage"].report == "report.json"
    assert "leakage" in spec.stages["register"].after
    assert spec.stages["leakage"].cmd.startswith("leakage check --canaries {leakage-plant}/copy/canaries.json "
                                                 "--model {leakage-train}/run/merged")
    # trained on the canary copy with the recipe's own keys
    assert "dataset={leakage-plant}/copy" in spec.stages["leakage-train"].cmd
    assert spec.stages["leakage-train"].params == spec.stages["train"].params


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return copy_repo_parts(tmp_path / "repo", (*PIPELINE_REPO_PARTS, "pipeline.yaml"))


def passed_merge_folder(repo: Path, tmp_path: Path, *, rule_evals: Report) -> Path:
    """A merge pipeline folder in which every gate passed (each with one gated metric), the candidate
    better than production on promote-if-better's metrics, and this rule-evals report."""
    pipe = tmp_path / "pipe"
    spec = load_pipeline(repo / "pipeline.yaml", "merge")
    write_spec(pipe, "merge", spec)
    for name, stage in spec.stages.items():
        if stage.report and name != "register":
            rep = rule_evals if name == "rule-evals" else Report(
                kind=name, metrics={f"{name}.ok": Metric(head=1.0, threshold=1.0, passed=True)})
            write_report(pipe / name / stage.report, rep)
    (pipe / "train" / "run").mkdir(parents=True)
    (pipe / "train" / "run" / "metrics.json").write_text(json.dumps({"perplexity": 10.0}))
    return pipe


def eval_report(rouge_l: float, outcomes: dict[str, bool], rows: int = 33, split: str = SPLIT) -> Report:
    rep = Report(kind="eval", info={"dataset": {"sha256": split, "rows": rows}})
    rep.cases = [{"id": cid, "suite": "quality", "passed": ok} for cid, ok in outcomes.items()]
    rep.metrics["pass_rate.quality"] = Metric(head=sum(outcomes.values()) / len(outcomes), threshold=0.0, passed=True)
    rep.metrics["dataset.rouge_l"] = Metric(head=rouge_l, threshold=0.0, passed=True)
    rep.metrics["dataset.token_f1"] = Metric(head=rouge_l, threshold=0.0, passed=True)
    return rep


def production_with(reg: Registry, tmp_path: Path, recorded: Report) -> str:
    reports = tmp_path / "prod-reports"
    write_report(reports / "eval" / "report.json", recorded)
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"w")
    prod = reg.register({"model": weights, "reports": reports},
                        {"metrics": {"dataset.rouge_l": 0.10, "dataset.token_f1": 0.10, "perplexity": 300.0},
                         "eval_split_sha256": SPLIT, "gates": {"eval": "pass"}})
    reg.set_alias("production", prod.version)
    return prod.version


def test_register_refuses_a_candidate_whose_rule_evals_regress_against_production(repo: Path, tmp_path: Path) -> None:
    """Better on ROUGE-L, F1 and perplexity (promote-if-better passes), but 3 quality cases that production
    passes now fail: more than max_drop (two of 17) below production on the same cases."""
    settings = Settings(root=repo, home=tmp_path / "home")
    ids = [f"q{i}" for i in range(17)]
    prod = production_with(Registry(settings.registry_dir), tmp_path,
                           eval_report(0.10, dict.fromkeys(ids, True)))
    candidate = eval_report(0.30, {i: n >= 3 for n, i in enumerate(ids)})
    pipe = passed_merge_folder(repo, tmp_path, rule_evals=candidate)
    with pytest.raises(GateFailed, match="candidate not registered") as err:
        register_candidate(settings, pipe, tmp_path / "out")
    assert "rule-evals.pass_rate.quality: 0.8235 vs production 1.0000 (over the 17 cases both ran)" in str(err.value)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["metrics"]["rule-evals.pass_rate.quality"]["passed"] is False
    assert report["metrics"]["dataset.rouge_l"]["passed"] is True  # promote-if-better alone would have let it in
    assert Registry(settings.registry_dir).versions() == [prod]


def test_eval_against_production_passes_within_max_drop_and_refuses_other_rows() -> None:
    thresholds = load_thresholds(Path(__file__).parents[2] / "evals" / "thresholds.yaml")
    ids = [f"q{i}" for i in range(17)]
    production = eval_report(0.144, dict.fromkeys(ids, True))
    # Two of 17 lower (= max_drop 0.12) and ROUGE-L 0.01 lower (max_drop 0.02): passes.
    findings, metrics = compare_eval_with_production(eval_report(0.134, {i: n >= 2 for n, i in enumerate(ids)}),
                                                     production, "version 1", thresholds, "rule-evals")
    assert [f for f in findings if f.severity == "error"] == []
    assert metrics["rule-evals.pass_rate.quality"].passed and metrics["rule-evals.dataset.rouge_l"].passed
    # ROUGE-L 0.03 lower: a regression.
    findings, metrics = compare_eval_with_production(eval_report(0.114, dict.fromkeys(ids, True)), production,
                                                     "version 1", thresholds, "rule-evals")
    assert metrics["rule-evals.dataset.rouge_l"].passed is False
    # Production measured on 20 rows (the PR gate's limit), the candidate on 33: not comparable.
    findings, _ = compare_eval_with_production(eval_report(0.2, dict.fromkeys(ids, True)),
                                               eval_report(0.1, dict.fromkeys(ids, True), rows=20),
                                               "version 1", thresholds, "rule-evals")
    assert any("scored 20 rows" in f.message and f.severity == "error" for f in findings)
    # A NaN recorded by production is not comparable, never a tie.
    nan = eval_report(0.1, dict.fromkeys(ids, True))
    nan.metrics["dataset.rouge_l"].head = float("nan")
    findings, _ = compare_eval_with_production(eval_report(0.2, dict.fromkeys(ids, True)), nan, "version 1",
                                               thresholds, "rule-evals")
    assert any("missing or NaN" in f.message and f.severity == "error" for f in findings)


def test_a_case_the_merge_added_is_left_out_and_nothing_in_common_is_not_comparable() -> None:
    """The rule `llmops eval --against` shares (llmops/jobs/production_eval.py): pass rates over the case ids both
    ran. A new case that fails does not block registration; a regression on the common cases does."""
    thresholds = load_thresholds(Path(__file__).parents[2] / "evals" / "thresholds.yaml")
    ids = [f"q{i}" for i in range(17)]
    production = eval_report(0.144, dict.fromkeys(ids, True))
    findings, metrics = compare_eval_with_production(eval_report(0.144, {**dict.fromkeys(ids, True), "q17": False}),
                                                     production, "version 1", thresholds, "rule-evals")
    assert [f for f in findings if f.severity == "error"] == []
    assert metrics["rule-evals.pass_rate.quality"].head == 1.0 and metrics["rule-evals.pass_rate.quality"].passed
    assert any("1 only the candidate ran (q17)" in f.message and f.severity == "warning" for f in findings)
    findings, metrics = compare_eval_with_production(eval_report(0.144, {**{i: n >= 3 for n, i in enumerate(ids)},
                                                                         "q17": True}),
                                                     production, "version 1", thresholds, "rule-evals")
    assert metrics["rule-evals.pass_rate.quality"].passed is False  # 14/17 on the common cases
    # Nothing in common at all (other cases, no dataset metric recorded): an error, never a pass.
    bare = eval_report(0.144, dict.fromkeys(ids, True))
    bare.metrics = {k: v for k, v in bare.metrics.items() if not k.startswith("dataset.")}
    findings, metrics = compare_eval_with_production(eval_report(0.2, {"other": True}), bare, "version 1",
                                                     thresholds, "rule-evals")
    assert metrics == {} and any("nothing compared" in f.message and f.severity == "error" for f in findings)


def deepeval_report(rouge1_passes: int, rows: int = 33, split: str = SPLIT) -> Report:
    rep = Report(kind="deepeval", info={"rows": rows, "dataset": {"sha256": split}})
    rep.metrics["deepeval.rouge1.pass_rate"] = Metric(head=rouge1_passes / rows, threshold=0.6, passed=True)
    rep.metrics["deepeval.bleu.pass_rate"] = Metric(head=1 / rows)  # no absolute floor
    rep.metrics["deepeval.correctness.pass_rate"] = Metric(head=None)  # skipped: no judge
    return rep


def test_deepeval_against_production_allows_one_row_and_fails_two() -> None:
    production = deepeval_report(24)
    findings, metrics = compare_deepeval_with_production(deepeval_report(23), production, "version 1")
    assert [f for f in findings if f.severity == "error"] == [] and metrics["deepeval.deepeval.rouge1.pass_rate"].passed
    findings, metrics = compare_deepeval_with_production(deepeval_report(22), production, "version 1")
    assert metrics["deepeval.deepeval.rouge1.pass_rate"].passed is False
    assert any("deepeval.rouge1.pass_rate: 0.6667 vs production 0.7273" in f.message for f in findings)
    assert "deepeval.deepeval.correctness.pass_rate" not in metrics  # skipped on both: nothing to compare
    findings, _ = compare_deepeval_with_production(deepeval_report(30, split="6" * 64), production, "version 1")
    assert any("not comparable" in f.message and f.severity == "error" for f in findings)
    findings, _ = compare_deepeval_with_production(deepeval_report(15, rows=20), production, "version 1")
    assert any("scored 33 rows of the eval split, the candidate 20" in f.message for f in findings)
