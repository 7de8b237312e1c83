"""The declared pipeline: validation, skip-if-unchanged, resume after a failure, promote-if-better."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llmops.errors import GateFailed, InputError
from llmops.jobs.pipeline import load_pipeline, load_pipelines, run_pipeline, write_spec
from llmops.jobs.register import compare_with_production, register_candidate
from llmops.settings import Settings
from tests.conftest import copy_repo_parts

SPEC = """\
pipelines:
  merge:
    stages:
      lint:
        cmd: prompts lint prompts/answer.yaml
        deps: [prompts/answer.yaml]
      check:
        cmd: data check python-faq --out {out}
        deps: [datasets/python-faq]
        params: [dataset]
        after: [lint]
        report: report.json
    promote_if_better:
      metrics: {dataset.rouge_l: higher}
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = copy_repo_parts(tmp_path / "repo")
    (root / "pipeline.yaml").write_text(SPEC)
    return root


def test_repo_pipeline_declaration_is_valid(repo_root: Path) -> None:
    pipelines = load_pipelines(repo_root / "pipeline.yaml")
    assert list(pipelines["merge"].stages) == ["data-check", "tokenise", "train", "deepeval", "rule-evals", "safety",
                                               "leakage-plant", "leakage-train", "leakage", "export", "loadtest",
                                               "register"]
    assert list(pipelines["main"].stages) == ["data-check", "train", "export", "base-eval", "eval", "safety",
                                              "register"]
    # The stages both run are written once (YAML anchors): the same command, deps and params.
    main, merge = pipelines["main"].stages, pipelines["merge"].stages
    assert main["data-check"] == merge["data-check"]
    assert main["train"].model_copy(update={"after": ["tokenise"]}) == merge["train"]
    assert main["safety"].deps == merge["safety"].deps and "--heldout evals/safety/heldout" in main["safety"].cmd
    assert pipelines["main"].promote_if_better == pipelines["merge"].promote_if_better
    for spec in pipelines.values():
        for stage in spec.stages.values():
            for dep in stage.deps:
                assert (repo_root / dep).exists(), dep


def valid_spec(path: Path) -> Path:
    path.write_text(SPEC)
    return path


def test_bad_declarations_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(SPEC.replace("after: [lint]", "after: [train]"))
    with pytest.raises(InputError, match=r"pipelines.merge.stages.check.after"):
        load_pipeline(path)
    with pytest.raises(InputError, match="no pipeline 'main'"):
        load_pipeline(valid_spec(path), "main")
    path.write_text(SPEC.replace("report: report.json", "reprot: report.json"))
    with pytest.raises(InputError, match="unknown key"):
        load_pipeline(path)


def test_unchanged_stages_are_skipped_and_a_failure_resumes(repo: Path, tmp_path: Path) -> None:
    settings = Settings(root=repo, home=tmp_path / "home")
    log: list[str] = []
    first = run_pipeline(settings, echo=log.append)
    assert [r.status for r in first.results] == ["ran", "ran"]
    second = run_pipeline(settings, echo=log.append)
    assert [r.status for r in second.results] == ["skipped", "skipped"]

    # A changed dep re-runs its stage and everything after it.
    prompt = repo / "prompts" / "answer.yaml"
    prompt.write_text(prompt.read_text().replace("Answer a question", "Answers a question"))
    assert [r.status for r in run_pipeline(settings, echo=log.append).results] == ["ran", "ran"]

    # A failing stage stops the run; after the fix, the stages before it are skipped.
    train = repo / "datasets" / "python-faq" / "train.jsonl"
    good = train.read_text()
    train.write_text(good.replace("Python", "Pithon", 1))  # sha256 no longer matches the card
    with pytest.raises(GateFailed, match="stage 'check' failed"):
        run_pipeline(settings, echo=log.append)
    train.write_text(good)
    resumed = run_pipeline(settings, echo=log.append)
    assert [r.status for r in resumed.results] == ["skipped", "ran"]


def test_promote_if_better_rules() -> None:
    rules = {"dataset.rouge_l": "higher", "perplexity": "lower"}
    ok, findings, metrics = compare_with_production({"dataset.rouge_l": 0.20, "perplexity": 40.0},
                                                    {"dataset.rouge_l": 0.18, "perplexity": 41.0}, rules, 0.005, False)
    assert ok and metrics["dataset.rouge_l"].passed
    ok, findings, _ = compare_with_production({"dataset.rouge_l": 0.15, "perplexity": 30.0},
                                              {"dataset.rouge_l": 0.18, "perplexity": 41.0}, rules, 0.005, False)
    assert not ok
    assert any("dataset.rouge_l: 0.1500 vs production 0.1800" in f.message and "worse" in f.message for f in findings)
    tie = ({"dataset.rouge_l": 0.18, "perplexity": 41.0}, {"dataset.rouge_l": 0.182, "perplexity": 41.001})
    assert not compare_with_production(*tie, rules, 0.005, False)[0]
    assert compare_with_production(*tie, rules, 0.005, True)[0]


def test_register_refuses_when_a_gate_report_failed(repo: Path, tmp_path: Path) -> None:
    settings = Settings(root=repo, home=tmp_path / "home")
    shutil.copy(Path(__file__).parents[2] / "pipeline.yaml", repo / "pipeline.yaml")
    pipe = tmp_path / "pipe"
    (pipe / "train" / "run").mkdir(parents=True)
    (pipe / "train" / "run" / "metrics.json").write_text('{"perplexity": 10.0}')
    with pytest.raises(InputError, match="not a pipeline folder"):  # which pipeline's gates? it cannot tell
        register_candidate(settings, pipe, tmp_path / "out")
    write_spec(pipe, "merge", load_pipeline(repo / "pipeline.yaml"))
    with pytest.raises(GateFailed, match="gate data-check: no report"):
        register_candidate(settings, pipe, tmp_path / "out")
    assert not (tmp_path / "home" / "registry" / "versions").exists()
    assert '"verdict": "fail"' in (tmp_path / "out" / "report.json").read_text()


def passed_pipeline(repo: Path, repo_root: Path, tmp_path: Path, *, rouge_l: float, token_f1: float,
                    perplexity: float, split: str | None = None) -> Path:
    """A pipeline folder in which every gate report passed, with these candidate metrics."""
    import json

    from llmops.report import Metric, Report

    spec_path = repo_root / "pipeline.yaml"
    shutil.copy(spec_path, repo / "pipeline.yaml")
    pipe = tmp_path / "pipe"
    write_spec(pipe, "merge", load_pipeline(spec_path))
    for name, stage in load_pipeline(spec_path).stages.items():
        if stage.report and name != "register":
            rep = Report(kind=name)
            if name == "rule-evals":
                rep.metrics["dataset.rouge_l"] = Metric(head=rouge_l)
                rep.metrics["dataset.token_f1"] = Metric(head=token_f1)
                if split:
                    rep.info["dataset"] = {"sha256": split}
            rep.add_check(name, [])
            (pipe / name / Path(stage.report).parent).mkdir(parents=True, exist_ok=True)
            (pipe / name / stage.report).write_text(json.dumps(rep.to_dict()))
    (pipe / "train" / "run").mkdir(parents=True)
    (pipe / "train" / "run" / "metrics.json").write_text(json.dumps({"perplexity": perplexity}))
    return pipe


def test_a_candidate_that_loses_to_production_is_not_registered(repo: Path, tmp_path: Path, repo_root: Path) -> None:
    import json

    from llmops.registry import Registry

    settings = Settings(root=repo, home=tmp_path / "home")
    pipe = passed_pipeline(repo, repo_root, tmp_path, rouge_l=0.10, token_f1=0.12, perplexity=500.0)  # every gate passed...
    # ...but production is better on ROUGE-L and perplexity.
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"w")
    reg = Registry(settings.registry_dir)
    prod = reg.register({"model": weights}, {"metrics": {"dataset.rouge_l": 0.20, "dataset.token_f1": 0.12,
                                                        "perplexity": 300.0}})
    reg.set_alias("production", prod.version)
    with pytest.raises(GateFailed, match="candidate not registered") as err:
        register_candidate(settings, pipe, tmp_path / "out")
    assert "dataset.rouge_l: 0.1000 vs production 0.2000" in str(err.value)
    assert reg.versions() == [prod.version] and "candidate" not in reg.aliases()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["verdict"] == "fail" and report["metrics"]["perplexity"]["passed"] is False


def test_a_nan_metric_is_worse_not_a_tie() -> None:
    rules = {"dataset.rouge_l": "higher", "perplexity": "lower"}
    ok, findings, _ = compare_with_production({"dataset.rouge_l": float("nan"), "perplexity": 30.0},
                                              {"dataset.rouge_l": 0.18, "perplexity": 41.0}, rules, 0.005, True)
    assert not ok and any("NaN" in f.message and f.severity == "error" for f in findings)


def test_production_measured_on_another_eval_split_is_not_comparable(repo: Path, tmp_path: Path,
                                                                      repo_root: Path) -> None:
    import json

    from llmops.registry import Registry

    settings = Settings(root=repo, home=tmp_path / "home")
    pipe = passed_pipeline(repo, repo_root, tmp_path, rouge_l=0.30, token_f1=0.30, perplexity=10.0,
                           split="a" * 64)  # every gate passed, the candidate is better
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"w")
    reg = Registry(settings.registry_dir)
    prod = reg.register({"model": weights}, {"metrics": {"dataset.rouge_l": 0.20, "dataset.token_f1": 0.12,
                                                        "perplexity": 300.0}, "eval_split_sha256": "b" * 64})
    reg.set_alias("production", prod.version)
    with pytest.raises(GateFailed, match="candidate not registered"):
        register_candidate(settings, pipe, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    messages = [f["message"] for c in report["checks"] for f in c["findings"]]
    assert any("not comparable" in m and "bbbbbbbbbbbb" in m for m in messages)
