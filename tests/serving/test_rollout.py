"""The rollout config, the metrics analysis (serving/rollout.py) and the release job's guards
(llmops/jobs/release.py); no workers needed.

    .venv/bin/pytest tests/serving/test_rollout.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops.errors import InputError
from serving.rollout import (
    ColourSample,
    RolloutConfig,
    Thresholds,
    histogram_quantile,
    load_config,
    measure,
    parse_metrics,
)

REPO = Path(__file__).resolve().parents[2]


def test_repo_rollout_yaml_is_valid_and_documents_every_field():
    cfg = load_config()
    assert cfg.steps()[-1] == 100
    lines = (REPO / "serving" / "rollout.yaml").read_text(encoding="utf-8").splitlines()
    for name in [*RolloutConfig.model_fields, "interval_seconds", "count", "failure_limit", "min_requests",
                 "max_error_rate", "max_p95_latency_ms", "max_guard_flag_rate",
                 "max_client_error_rate_increase", "golden_tags", "safety_tags"]:
        at = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{name}:"))
        assert lines[at - 1].strip().startswith("#"), f"{name} has no comment above it"


@pytest.mark.parametrize(("strategy", "steps"), [("all-at-once", [100]), ("canary", [10, 100]),
                                                 ("linear", [25, 50, 75, 100])])
def test_steps_per_strategy(strategy, steps):
    assert RolloutConfig(strategy=strategy).steps() == steps


def test_linear_step_that_does_not_divide_100_still_ends_at_100():
    assert RolloutConfig(strategy="linear", linear_step_percent=30).steps() == [30, 60, 90, 100]


@pytest.mark.parametrize(("yaml_text", "field", "message"), [
    ("strategy: blue-green\n", "strategy", "unknown value"),
    ("bake_seconds: 30\nanalysis:\n  intervall_seconds: 5\n", "analysis.intervall_seconds", "unknown key"),
    ("thresholds:\n  max_error_rate: 2\n", "thresholds.max_error_rate", "less than or equal to 1"),
    ("bake_seconds: 10\nanalysis:\n  interval_seconds: 5\n  count: 3\n", "", "exceeds bake_seconds"),
])
def test_bad_config_names_file_line_and_field(tmp_path, yaml_text, field, message):
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml_text, encoding="utf-8")
    with pytest.raises(InputError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)
    if field:
        assert info.value.field == field and info.value.line is not None


METRICS = """\
# TYPE llmops_gateway_requests_total counter
llmops_gateway_requests_total{colour="green",status="200"} 95.0
llmops_gateway_requests_total{colour="green",status="500"} 5.0
llmops_gateway_requests_total{colour="blue",status="200"} 1000.0
# TYPE llmops_gateway_upstream_errors_total counter
llmops_gateway_upstream_errors_total{colour="green",kind="http_500"} 5.0
# TYPE llmops_gateway_responses_total counter
llmops_gateway_responses_total{colour="green"} 95.0
# TYPE llmops_gateway_guard_flags_total counter
llmops_gateway_guard_flags_total{colour="green",kind="pii"} 1.0
# TYPE llmops_gateway_upstream_latency_seconds histogram
llmops_gateway_upstream_latency_seconds_bucket{colour="green",le="0.1"} 50.0
llmops_gateway_upstream_latency_seconds_bucket{colour="green",le="1.0"} 100.0
llmops_gateway_upstream_latency_seconds_bucket{colour="green",le="+Inf"} 100.0
llmops_gateway_upstream_latency_seconds_count{colour="green"} 100.0
llmops_gateway_upstream_latency_seconds_sum{colour="green"} 30.0
"""


def test_parse_metrics_reads_only_the_colour_asked_for():
    green = parse_metrics(METRICS, "green")
    assert (green.requests, green.errors, green.responses, green.guard_flags) == (100, 5, 95, 1)
    assert parse_metrics(METRICS, "blue").requests == 1000


def test_histogram_quantile_interpolates_like_prometheus():
    # 95th of 100: rank 95, in the (0.1, 1.0] bucket holding ranks 51..100 -> 0.1 + 0.9 * 45/50
    assert histogram_quantile(0.95, {0.1: 50, 1.0: 100, float("inf"): 100}) == pytest.approx(0.91)
    assert histogram_quantile(0.95, {0.1: 0, float("inf"): 0}) is None


def test_measurement_fails_on_each_breached_threshold_and_passes_within():
    empty = ColourSample()
    after = parse_metrics(METRICS, "green")  # 5 % errors, p95 910 ms, 1/95 flagged
    loose = Thresholds(max_error_rate=0.1, max_p95_latency_ms=1000, max_guard_flag_rate=0.05)
    assert measure(empty, after, loose, min_requests=5).verdict == "pass"
    for tight, word in ((loose.model_copy(update={"max_error_rate": 0.01}), "error rate"),
                        (loose.model_copy(update={"max_p95_latency_ms": 500}), "p95 latency"),
                        (loose.model_copy(update={"max_guard_flag_rate": 0.0}), "guard-flag rate")):
        m = measure(empty, after, tight, min_requests=5)
        assert m.verdict == "fail" and len(m.reasons) == 1 and word in m.reasons[0]


def test_measurement_over_a_window_uses_deltas_and_is_inconclusive_with_few_requests():
    after = parse_metrics(METRICS, "green")
    assert measure(after, after, Thresholds(), min_requests=5).verdict == "inconclusive"


def _colours(green: dict[str, float], blue: dict[str, float]) -> str:
    """Gateway metrics text: requests per status of each colour."""
    return "# TYPE llmops_gateway_requests_total counter\n" + "".join(
        f'llmops_gateway_requests_total{{colour="{colour}",status="{status}"}} {n}\n'
        for colour, counts in (("green", green), ("blue", blue)) for status, n in counts.items())


def test_preview_answering_400_to_30_percent_fails_where_the_stable_colour_does_not():
    preview = parse_metrics(_colours({"200": 70, "400": 30}, {"200": 700}), "green")
    assert (preview.client_errors, preview.peer_requests, preview.peer_client_errors) == (30, 700, 0)
    m = measure(ColourSample(), preview, Thresholds(), min_requests=5)  # the default thresholds
    assert m.verdict == "fail" and m.client_error_rate == pytest.approx(0.3) and m.stable_client_error_rate == 0
    assert len(m.reasons) == 1 and "4xx rate 0.300 > the stable colour's 0.000 + 0.05" in m.reasons[0]
    # The same 400 rate on both colours (clients sending bad requests) passes.
    both = parse_metrics(_colours({"200": 70, "400": 30}, {"200": 700, "400": 300}), "green")
    m = measure(ColourSample(), both, Thresholds(), min_requests=5)
    assert m.verdict == "pass" and m.stable_client_error_rate == pytest.approx(0.3), m.reasons


def test_4xx_baseline_is_the_stable_window_else_its_history_else_zero():
    before = parse_metrics(_colours({"200": 0}, {"200": 80, "400": 20}), "green")
    # The last step: the stable colour gets no traffic in the window; its history (20 %) is the baseline.
    after = parse_metrics(_colours({"200": 80, "422": 20}, {"200": 80, "400": 20}), "green")
    m = measure(before, after, Thresholds(), min_requests=5)
    assert m.verdict == "pass" and m.stable_client_error_rate == pytest.approx(0.2)
    # In the window the stable colour answered every request: that is the baseline, not its history.
    later = parse_metrics(_colours({"200": 160, "422": 40}, {"200": 180, "400": 20}), "green")
    m = measure(after, later, Thresholds(), min_requests=5)
    assert m.verdict == "fail" and m.stable_client_error_rate == 0 and "4xx rate 0.200" in m.reasons[0]
    # A first release: no stable traffic at all, compared with 0.
    first = parse_metrics(_colours({"200": 90, "404": 10}, {}), "green")
    m = measure(ColourSample(), first, Thresholds(), min_requests=5)
    assert m.verdict == "fail" and m.stable_client_error_rate == 0
    assert measure(ColourSample(), first, Thresholds(max_client_error_rate_increase=0.1), 5).verdict == "pass"


def test_corrupted_artifact_is_refused_before_the_gateway_is_touched(llmops_home, exported):
    from llmops.jobs.release import release
    from llmops.registry import IntegrityError
    from llmops.settings import Settings
    from tests.serving.bluegreen import make_home

    home, _ = make_home(llmops_home.parent, exported.variants["fp32"], versions=2)
    model = home / "registry" / "versions" / "2" / "files" / "onnx" / "fp32" / "model.onnx"
    with open(model, "r+b") as handle:  # flip one byte
        first = handle.read(1)
        handle.seek(0)
        handle.write(bytes([first[0] ^ 1]))
    with pytest.raises(IntegrityError, match="model.onnx"):
        release("2", settings=Settings(home=home), gateway_url="http://127.0.0.1:9")  # never contacted
    assert not (home / "gateway" / "release.lock").exists()


@pytest.mark.parametrize("action", ["release", "rollback"])
def test_user_key_cannot_release_or_roll_back(llmops_home, exported, action):
    from governance.policy import PermissionDenied
    from llmops.jobs.release import release, rollback
    from llmops.settings import Settings
    from tests.serving.bluegreen import audit_actions, make_home

    home, keys = make_home(llmops_home.parent, exported.variants["fp32"], versions=2)
    settings = Settings(home=home, api_key=keys["user"])  # LLMOPS_API_KEY=<the user key>
    with pytest.raises(PermissionDenied, match=f"may not '{action}'"):
        if action == "release":
            release("1", settings=settings, gateway_url="http://127.0.0.1:9")
        else:
            rollback(reason="x", settings=settings, gateway_url="http://127.0.0.1:9")
    denied = [e for e in audit_actions(home) if e["action"] == "role.denied"]
    assert denied and denied[-1]["role"] == "user" and denied[-1]["details"]["permission"] == action


def test_a_tag_releases_the_version_trained_from_its_commit(llmops_home, exported, tmp_path):
    import subprocess

    from llmops.jobs.release import resolve_release_ref
    from llmops.registry import Registry
    from tests.serving.bluegreen import make_home, trained_from

    home, _ = make_home(llmops_home.parent, exported.variants["fp32"], versions=2)
    registry = Registry(home / "registry")
    assert resolve_release_ref(registry, "v1.3.0", commit=trained_from(1)) == ("1", "v1.3.0")
    assert resolve_release_ref(registry, "1") == ("1", None)
    assert resolve_release_ref(registry, "production") == ("1", None)
    # not the candidate's commit: a tag never means "whatever candidate points at now"
    with pytest.raises(InputError, match="no registered version was trained from v1.4.0"):
        resolve_release_ref(registry, "v1.4.0", commit="f" * 40)
    with pytest.raises(InputError, match="no model version or alias 'nightly'"):
        resolve_release_ref(registry, "nightly")
    # without --commit the tag is looked up in the checkout: a real repository with a real tag
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "release me"], check=True)
    subprocess.run([*git, "tag", "v2.0.0"], check=True)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    with pytest.raises(InputError, match="no registered version was trained from v2.0.0"):
        resolve_release_ref(registry, "v2.0.0", root=repo)
    registry.register({"onnx/fp32": exported.variants["fp32"]}, {"git": {"sha": sha, "dirty": True}})
    with pytest.raises(InputError, match="clean tree"):  # trained from uncommitted changes: not that commit
        resolve_release_ref(registry, "v2.0.0", root=repo)
    registry.register({"onnx/fp32": exported.variants["fp32"]}, {"git": {"sha": sha, "dirty": False}})
    assert resolve_release_ref(registry, "v2.0.0", root=repo) == ("4", "v2.0.0")
    with pytest.raises(InputError, match="has no such tag"):
        resolve_release_ref(registry, "v9.9.9", root=repo)


