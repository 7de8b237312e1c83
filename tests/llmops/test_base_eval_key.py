"""The committed base-model eval (evals/baseline/base-model.json) is reused only while its key matches: the key
must change with everything that decides the report, the guards in front of the model included."""

from __future__ import annotations

from pathlib import Path

from llmops.jobs.base_eval import _eval_key
from llmops.settings import Settings
from serving.guards import GUARD_FILES
from tests.conftest import copy_repo_parts

CODE = ("evals/rule_evals.py", "evals/metrics.py", "serving/export.py", "serving/graph_edits.py", "serving/runtime.py", "serving/sampling.py", "serving/app.py", "serving/streaming.py",
        "serving/batching.py", "serving/prefix_cache.py", "llmops/prompts.py")


def test_the_key_follows_the_guards_their_code_and_their_data(tmp_path: Path) -> None:
    repo = copy_repo_parts(tmp_path / "repo", ("evals/cases", "prompts", "datasets/python-faq", *CODE, *GUARD_FILES))
    faq = repo / "datasets" / "python-faq"

    def key(guards: bool = True, scope_check: bool = True) -> str:
        return _eval_key(Settings(root=repo, home=tmp_path / "home", guards=guards, scope_check=scope_check),
                         "local:base@1", faq, 40)

    first = key()
    assert key() == first
    assert key(guards=False) != first  # a bare model answers the injection cases itself
    assert key(scope_check=False) != first  # the scope check decides some chat answers' first token
    for rel in ("governance/detector_references.yaml", "governance/models/injection_head.json", "serving/guards.py",
                "governance/models/scope_head.json", "serving/sampling.py",
                "serving/export.py", "serving/graph_edits.py"):  # the export decides the graph that is served
        path = repo / rel
        saved = path.read_bytes()
        path.write_bytes(saved + b"\n")
        assert key() != first, rel
        path.write_bytes(saved)
    assert key() == first
