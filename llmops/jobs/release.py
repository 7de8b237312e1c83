"""The release job: blue/green with analysis, abort, promotion, scale-down delay and rollback.

    llmops release v1.3.0                  # or a registry version (3) or alias (candidate)
    llmops rollback --reason "p95 doubled after v1.3.0"
    llmops status

A release (Argo Rollouts' blueGreen vocabulary, SageMaker's traffic shifting) runs here, in the
CLI process, and drives the gateway (serving.gateway) through its admin API. The policy it follows
(steps, bakes, thresholds) and the measurement of one bake window are serving/rollout.py's, read
from serving/rollout.yaml; this job joins them with the registry, the role policy, the audit log
and the evals:

 1. resolve VERSION in the registry and re-hash every file (a corrupted artifact: exit 2, the
    gateway is not touched). A git-tag-like name `vX.Y.Z` that is not a registry version means
    the newest version trained from the tagged commit (its lineage's git sha, clean tree; the
    workflow passes the commit); the tag goes into the audit log and the promotion record.
 2. load it into the idle colour: the preview, 0 % of traffic.
 3. pre-promotion analysis against the preview's own URL: /readyz, the golden cases
    (serving/rollout.yaml `golden_tags`) and the safety probes (`safety_tags`), gated by
    evals/thresholds.yaml against the active version measured in the same run (a first release,
    with no active version: against the absolute floors). Each runs twice: as raw completions of
    the repository's prompts, and through /v1/chat/completions with the prompt the version serves
    (its own prompt.yaml), the path the chat page and OpenAI clients take.
 4. traffic steps (all-at-once, canary or linear); after each, a bake of `bake_seconds` during
    which the gateway's Prometheus metrics of the preview colour are measured every
    `interval_seconds`: error rate, p95 latency and guard-flag rate against the thresholds.
    More than `failure_limit` failed measurements, or a dead preview worker, fail the step. So do
    more than `inconclusive_limit` inconclusive ones (too few requests), and a bake with no passing
    measurement: a release is never promoted on no evidence. The controller's own probe requests
    to the preview (llmops/jobs/release_probe.py) count beside real traffic, so a quiet hour is
    still measured.
 5. any failure aborts at once: 100 % back to the stable colour, `release.abort` in the audit
    log with why, exit 1. So does any other way out of the traffic steps: an exception, Ctrl-C,
    SIGTERM or SIGHUP (a CI cancel or timeout) restores the stable colour and writes the abort
    entry before the process ends. Success: the gateway makes the preview stable (the old colour stays
    warm for `scale_down_delay_seconds`), `production` moves to the version, `release.promote`.

The last analysis (pass or fail, with every measurement) is written to
`<home>/gateway/last_analysis.json` and shown by `llmops status`. The rollback benchmark
(`llmops bench rollback`) is in llmops/jobs/bench.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.rule_evals import run_eval
from governance.audit import audit_event, current_anchor
from governance.policy import authorize
from llmops.errors import GateFailed, InputError
from llmops.files import atomic_write_json
from llmops.jobs.release_probe import Prober, add_samples
from llmops.registry import open_registry
from llmops.settings import Settings
from serving.export import serving_prompt
from serving.gateway import GatewayClient, load_state, other, state_path
from serving.gateway.admin import worker_token
from serving.gateway.state import servable
from serving.rollout import RolloutConfig, load_config, measure, parse_metrics

TAG = re.compile(r"^v\d+\.\d+\.\d+([.+-][0-9A-Za-z.+-]+)?$")


def _request_errors(report: Any) -> set[str]:
    return {c["id"] for c in report.cases if any(a["type"] == "request" for a in c.get("assertions", []))}


# ---- the controller ----------------------------------------------------------------------------
class ReleaseAborted(GateFailed):
    """An analysis failed; traffic is back on the stable colour. Exit 1."""


class ReleaseInterrupted(BaseException):
    """SIGTERM or SIGHUP during a release. A BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way swallows it before the controller restores the stable colour."""


INTERRUPTS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP raise ReleaseInterrupted in the main thread (SIGINT already raises
    KeyboardInterrupt), so a CI cancel or timeout unwinds through the controller's clean-up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise ReleaseInterrupted(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in INTERRUPTS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """No signal cuts the clean-up short: SIGINT, SIGTERM and SIGHUP wait until it is done (main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = (signal.SIGINT, *INTERRUPTS)
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in held}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@dataclass
class ReleaseResult:
    version: str
    colour: str
    promoted: bool
    analysis: dict[str, Any]


def tag_commit(root: Path, tag: str) -> str:
    """The commit the git tag `tag` points at in the checkout at `root`; InputError without one."""
    found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{commit}}"], cwd=root,
                           capture_output=True, text=True)
    if found.returncode != 0 or not found.stdout.strip():
        raise InputError(f"{tag!r} is a release tag, but the checkout at {root} has no such tag (git fetch --tags), "
                         "or pass the tagged commit with --commit SHA", field="version")
    return found.stdout.strip()


def resolve_release_ref(registry: Any, ref: str, *, commit: str | None = None,
                        root: Path | None = None) -> tuple[str, str | None]:
    """(version, tag): a registry version or alias as is. A tag `vX.Y.Z` releases the newest version
    the merge job trained from the tagged commit (lineage git sha, from a clean tree), `commit` or
    the tag's commit in the checkout at `root`; none trained from it is an InputError. So a tag
    never releases whatever `candidate` happens to point at when the tag is pushed."""
    if ref in registry.versions() or ref in registry.aliases():
        return registry.resolve(ref), None
    if TAG.match(ref):
        commit = commit or tag_commit(root or Path.cwd(), ref)
        trained = []
        for version in registry.versions():
            git = registry.get(version, verify=False).lineage.get("git") or {}
            if git.get("sha") == commit and git.get("dirty") is False:
                trained.append(version)
        if not trained:
            raise InputError(f"no registered version was trained from {ref} (commit {commit[:12]}, clean tree): the "
                             "merge job registers one per commit on main; tag a commit it trained, or release a "
                             "version number", field="version")
        return max(trained, key=int), ref
    return registry.resolve(ref), None  # raises InputError listing what exists


def verified_version(registry: Any, ref: str, *, commit: str | None = None,
                     root: Path | None = None) -> tuple[Any, str | None]:
    """(ModelVersion, tag) after re-hashing every file; IntegrityError (exit 2) names a corrupted one."""
    version, tag = resolve_release_ref(registry, ref, commit=commit, root=root)
    return registry.get(version), tag


def served_prompt(registry: Any, version: str) -> Any:
    """The Prompt a registry version serves: its own prompt.yaml (serving/export.py), else prompts/answer.yaml."""
    folder, _ = servable(registry.get(version, verify=False).files)
    return serving_prompt(folder)


@contextlib.contextmanager
def release_lock(settings: Settings) -> Iterator[None]:
    """One release or rollback at a time per home; a second one is refused (exit 2), not queued."""
    path = settings.home / "gateway" / "release.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError("another release or rollback is running under this home", file=str(path)) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def last_analysis_path(settings: Settings) -> Path:
    return settings.home / "gateway" / "last_analysis.json"


class Controller:
    def __init__(self, settings: Settings, config: RolloutConfig, client: Any, principal: Any,
                 log: Any = print) -> None:
        self.settings, self.cfg, self.gw, self.principal, self.log = settings, config, client, principal, log
        self.record: dict[str, Any] = {"phases": []}

    def audit(self, action: str, target: str, details: dict[str, Any], reason: str = "") -> None:
        audit_event(action, actor=self.principal.name, role=self.principal.role, target=target,
                    details=details, reason=reason, settings=self.settings)

    def bearer(self) -> str | None:
        """What the controller presents to the workers, which take an API key or the gateway's token:
        the caller's key, else (the local operator, who can read the gateway's folder anyway) that token."""
        return self.settings.secret("api_key") or worker_token(self.settings)

    def save_record(self) -> None:
        """The analysis record, with the audit log's head after this release's last entry (SEQ:HASH):
        `llmops audit verify --anchor` with it catches a log cut or rewritten since."""
        self.record["audit_anchor"] = current_anchor(self.settings)
        atomic_write_json(last_analysis_path(self.settings), self.record)

    # -- pre-promotion --
    def pre_promotion(self, preview_url: str, stable_url: str | None, version: str,
                      served: dict[str, Any]) -> list[str]:
        """Failures of the pre-promotion analysis (empty: passed). Every check runs for real.
        `served`: {"preview": Prompt, "stable": Prompt | None}, the prompts the two versions serve
        (no stable prompt: no baseline on the chat route)."""
        import httpx

        failures: list[str] = []
        phase: dict[str, Any] = {"phase": "pre-promotion", "checks": {}}
        self.record["phases"].append(phase)
        try:
            ready = httpx.get(preview_url + "/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            ready = False
        phase["checks"]["health"] = {"passed": ready}
        if not ready:
            return [f"preview {preview_url} does not answer /readyz"]
        root = self.settings.root
        gates = root / self.cfg.pre_promotion.thresholds  # an absolute path stays absolute
        bearer = self.bearer()
        checks = [(name, tags, route) for route in ("completions", "chat")
                  for name, tags in (("golden", self.cfg.pre_promotion.golden_tags),
                                     ("safety", self.cfg.pre_promotion.safety_tags))]
        for name, tags, route in checks:
            name = name if route == "completions" else f"{name} (chat, served prompt)"
            kwargs: dict[str, Any] = {"tags": tags, "workers": 2, "timeout": 60.0, "retries": 0, "thresholds_path": gates,
                                      "api_key": bearer, "route": route}
            on_stable = stable_url if route == "completions" or served.get("stable") is not None else None
            baseline = (run_eval(on_stable, root / "evals" / "cases", root / "prompts", served_prompt=served.get("stable"),
                                 model_version=f"stable-{time.time()}", **kwargs) if on_stable else None)
            report = run_eval(preview_url, root / "evals" / "cases", root / "prompts", baseline=baseline,
                              served_prompt=served["preview"], model_version=f"preview-v{version}-{time.time()}",
                              **kwargs)
            metrics = {k: {"head": m.head, "base": m.base, "threshold": m.threshold, "passed": m.passed}
                       for k, m in report.metrics.items()}
            # A request the active version also fails (e.g. a prompt longer than a tiny model's
            # window, 400 on both) is the model's limit, already in the pass rate; one that fails
            # only on the preview is a broken version.
            errors = sorted(_request_errors(report) - (_request_errors(baseline) if baseline else set()))
            passed = report.passed and not errors
            phase["checks"][name] = {"passed": passed, "tags": tags, "route": route, "metrics": metrics,
                                     "cases": len(report.cases), "request_errors_only_on_preview": errors}
            if errors:
                failures.append(f"{name}: {len(errors)} request(s) failed only on the preview: "
                                f"{', '.join(errors[:5])}")
            for key, m in report.metrics.items():
                if m.passed is False:
                    failures.append(f"{name}: {key} {m.head:.3f} < floor {m.threshold:.3f} (active: {m.base})")
        return failures

    # -- bake --
    def sample(self, colour: str, prober: Prober | None) -> Any:
        """The preview colour's cumulative counts: the gateway's, plus the controller's probes."""
        gateway = parse_metrics(self.gw.metrics_text(), colour)
        return add_samples(gateway, prober.sample()) if prober is not None else gateway

    def bake(self, colour: str, weight: int, prober: Prober | None = None) -> list[str]:
        """Measure the preview for one bake; failures (empty: passed). Too many failed or inconclusive
        measurements fail it, and so does a bake in which no measurement passed."""
        a = self.cfg.analysis
        phase: dict[str, Any] = {"phase": f"bake {weight}%", "measurements": []}
        self.record["phases"].append(phase)
        before = self.sample(colour, prober)
        verdicts: dict[str, int] = {"pass": 0, "fail": 0, "inconclusive": 0}
        for _ in range(self.cfg.measurements_per_bake()):
            deadline = time.monotonic() + a.interval_seconds
            while time.monotonic() < deadline:  # watch the worker's health between measurements
                status = self.gw.status()
                if not status["colours"][colour]["up"]:
                    phase["measurements"].append({"at": time.time(), "verdict": "fail",
                                                  "reasons": [f"the {colour} worker is down"]})
                    return [f"bake {weight}%: the preview ({colour}) worker is down"]
                time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
            after = self.sample(colour, prober)
            m = measure(before, after, self.cfg.thresholds, a.min_requests)
            before = after
            phase["measurements"].append(m.to_dict())
            verdicts[m.verdict] += 1
            self.log(f"  bake {weight}%: {m.verdict} ({m.requests} req, error rate {m.error_rate}, "
                     f"p95 {m.p95_latency_ms} ms, guard {m.guard_flag_rate}) {'; '.join(m.reasons)}")
            if m.verdict == "fail" and verdicts["fail"] > a.failure_limit:
                return [f"bake {weight}%: {verdicts['fail']} failed measurements > failure_limit {a.failure_limit}: "
                        + "; ".join(m.reasons)]
            if m.verdict == "inconclusive" and verdicts["inconclusive"] > a.inconclusive_limit:
                return [f"bake {weight}%: inconclusive, {verdicts['inconclusive']} measurements without enough "
                        f"requests > inconclusive_limit {a.inconclusive_limit} ({'; '.join(m.reasons)}): no "
                        "evidence that the preview is healthy"]
        if prober is not None:
            phase["probes"] = prober.summary()
        if not verdicts["pass"]:
            return [f"bake {weight}%: inconclusive, no measurement passed ({verdicts}): no evidence that the "
                    "preview is healthy"]
        return []

    def restore(self, stable: str | None, preview: str, version: str, reasons: list[str], tag: str | None) -> None:
        """Traffic back on the stable colour (a first release: the preview stopped), the record and the
        `release.abort` audit entry; no signal interrupts it."""
        with interrupts_held():
            try:
                if stable is not None:
                    self.gw.rollback(stable, reason="release aborted: " + "; ".join(reasons))
                else:
                    with contextlib.suppress(Exception):
                        self.gw.stop(preview, reason="first release aborted")
            finally:
                verdict = "inconclusive" if reasons and all("inconclusive" in r for r in reasons) else "fail"
                self.record.update(verdict=verdict, reasons=reasons, finished=time.time())
                self.audit("release.abort", "production", {"version": version, "tag": tag, "colour": preview,
                                                            "stable": stable, "verdict": verdict,
                                                            "analysis": self.record["phases"]},
                           reason="; ".join(reasons))
                self.save_record()

    def abort(self, stable: str | None, preview: str, version: str, reasons: list[str], tag: str | None) -> None:
        self.restore(stable, preview, version, reasons, tag)
        raise ReleaseAborted(f"release of version {version} aborted, traffic is on {stable or 'no colour'}: "
                             + "; ".join(reasons))

    def analyse_and_shift(self, ref: str, registry: Any, version: str, status: dict[str, Any], stable: str | None,
                          preview: str, tag: str | None) -> None:
        """Pre-promotion analysis, then each traffic step and its bake, with the probes running."""
        stable_url = status["colours"][stable]["url"] if stable else None
        stable_version = status["colours"][stable]["version"] if stable else None
        served = {"preview": served_prompt(registry, version),
                  "stable": (served_prompt(registry, stable_version)
                             if stable_version is not None and stable_version in registry.versions() else None)}
        preview_url = status["colours"][preview]["url"]
        failures = self.pre_promotion(preview_url, stable_url, version, served)
        self.log(f"pre-promotion analysis: {'passed' if not failures else 'FAILED: ' + '; '.join(failures)}")
        if failures:
            self.abort(stable, preview, version, failures, tag)
        with Prober(preview_url, self.bearer(), self.cfg.analysis.probe) as prober:
            for weight in self.cfg.steps() if stable else [100]:
                weights = {preview: weight, stable: 100 - weight} if stable else {preview: 100}
                self.gw.weights(weights, reason=f"release {ref}: step {weight}%")
                failures = self.bake(preview, weight, prober)
                if failures:
                    self.abort(stable, preview, version, failures, tag)

    def release(self, ref: str, *, fault: str | None = None, commit: str | None = None) -> ReleaseResult:
        registry = open_registry(self.settings)
        # compare-and-set: production must still be what it was now when this release moves it
        production = registry.aliases().get("production")
        mv, tag = verified_version(registry, ref, commit=commit, root=self.settings.root)
        status = self.gw.status()
        stable = status["stable"]
        if stable is not None and status["colours"][stable]["version"] == mv.version:
            raise InputError(f"version {mv.version} is already active on {stable}")
        preview = "green" if stable == "blue" else "blue"
        self.record.update(version=mv.version, tag=tag, ref=ref, colour=preview, stable=stable,
                           started=time.time(), config=self.cfg.model_dump())
        self.audit("release.start", "production", {"version": mv.version, "tag": tag, "ref": ref,
                                                    "colour": preview, "stable": stable,
                                                    "strategy": self.cfg.strategy, "fault": fault})
        self.log(f"release version {mv.version}{f' (tag {tag})' if tag else ''}: loading into {preview} (preview)")
        with interrupts_raise():
            try:
                try:
                    status = self.gw.load(preview, mv.version, reason=f"release {ref}", fault=fault, tag=tag)
                except (InputError, RuntimeError) as exc:
                    self.abort(stable, preview, mv.version, [f"loading the preview failed: {exc}"], tag)
                self.analyse_and_shift(ref, registry, mv.version, status, stable, preview, tag)
            except ReleaseAborted:
                raise
            except BaseException as exc:  # Ctrl-C, SIGTERM/SIGHUP (a CI cancel), a crash: never half-released
                why = (f"interrupted by {exc}" if isinstance(exc, ReleaseInterrupted) else
                       "interrupted by SIGINT (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else
                       f"the controller failed: {type(exc).__name__}: {exc}")
                self.log(f"release {why}: restoring {stable or 'no colour'}")
                self.restore(stable, preview, mv.version, [why], tag)
                raise ReleaseAborted(f"release of version {mv.version} aborted ({why}), traffic is on "
                                     f"{stable or 'no colour'}") from exc
        now = registry.aliases().get("production")
        if now != production:  # another release or rollback (shared registry) won meanwhile
            self.abort(stable, preview, mv.version, [f"production moved from version {production} to {now} during "
                                                     "this release (another release or rollback)"], tag)
        self.gw.promote(preview, self.cfg.scale_down_delay_seconds, reason=f"release {ref} promoted")
        moved = registry.set_alias("production", mv.version, reason=f"release {ref}" + (f" (tag {tag})" if tag else ""),
                                   actor=self.principal.name, expected=production)
        self.record.update(verdict="pass", reasons=[], finished=time.time())
        self.audit("release.promote", "production", {"version": mv.version, "tag": tag, "colour": preview,
                                                      "previous_colour": stable,
                                                      "scale_down_delay_seconds": self.cfg.scale_down_delay_seconds,
                                                      "analysis": self.record["phases"],
                                                      "alias_history_hash": moved["hash"]})
        self.save_record()
        self.log(f"promoted version {mv.version} on {preview}; {stable or 'no colour'} stays warm for "
                 f"{self.cfg.scale_down_delay_seconds:g} s")
        return ReleaseResult(mv.version, preview, True, self.record)


def release(ref: str, *, settings: Settings | None = None, config: RolloutConfig | str | Path | None = None,
            gateway_url: str | None = None, fault: str | None = None, commit: str | None = None,
            log: Any = print) -> ReleaseResult:
    """`llmops release REF`: role check ("release"), then the whole blue/green release. Raises InputError
    (exit 2) for bad input or a refused role, ReleaseAborted (exit 1) when an analysis fails.
    `commit`: the commit a tag REF points at (default: the tag in the checkout)."""
    settings = settings or Settings.load()
    principal = authorize("release", target="production", settings=settings)
    cfg = config if isinstance(config, RolloutConfig) else load_config(config)
    # refuse a corrupted artifact, or a tag nothing was trained from, before any change
    verified_version(open_registry(settings), ref, commit=commit, root=settings.root)
    with release_lock(settings):
        client = GatewayClient(gateway_url, settings)
        try:
            return Controller(settings, cfg, client, principal, log).release(ref, fault=fault, commit=commit)
        finally:
            client.close()


def rollback(*, reason: str, to: str | None = None, settings: Settings | None = None,
             gateway_url: str | None = None, log: Any = print) -> dict[str, Any]:
    """`llmops rollback`: traffic to the previous colour (or `to`, loaded first when not warm), the
    `production` alias back, an audit entry. Returns {"colour", "version", "switch_s", "loaded"}."""
    if not reason.strip():
        raise InputError("a rollback needs --reason", field="reason")
    settings = settings or Settings.load()
    principal = authorize("rollback", target="production", settings=settings)
    registry = open_registry(settings)
    with release_lock(settings):
        client = GatewayClient(gateway_url, settings)
        try:
            status = client.status()
            stable = status["stable"]
            if stable is None:
                raise InputError("the gateway has no stable colour to roll back from")
            if to is None:
                target = status["preview"] or other(stable)
                version = status["colours"][target]["version"] or registry.aliases().get("previous")
                if version is None:
                    raise InputError("nothing to roll back to: no other colour and no `previous` alias; use --to")
            else:
                version = registry.resolve(to)
                target = next((c for c in ("blue", "green") if c != stable
                               and status["colours"][c]["version"] == version), other(stable))
            cs = status["colours"][target]
            loaded = False
            if not (cs["running"] and cs["up"] and cs["version"] == version):
                log(f"version {version} is not warm on {target}: loading it first")
                registry.get(version)  # verify checksums before it gets traffic
                client.load(target, version, reason=f"rollback: {reason}")
                loaded = True
            started = time.perf_counter()
            client.rollback(target, reason=reason)
            switch_s = time.perf_counter() - started
        finally:
            client.close()
    moved = None
    production = registry.aliases().get("production")
    if production != version:
        moved = registry.set_alias("production", version, reason=f"rollback: {reason}", actor=principal.name,
                                   expected=production)
    audit_event("rollback", actor=principal.name, role=principal.role, target="production",
                details={"from_colour": stable, "from_version": status["colours"][stable]["version"],
                         "to_colour": target, "to_version": version, "loaded": loaded,
                         "switch_s": round(switch_s, 4),
                         **({"alias_history_hash": moved["hash"]} if moved else {})}, reason=reason, settings=settings)
    log(f"traffic on {target} (version {version}) in {switch_s * 1000:.0f} ms; production -> {version}")
    return {"colour": target, "version": version, "switch_s": switch_s, "loaded": loaded}


def status_report(settings: Settings | None = None, gateway_url: str | None = None) -> dict[str, Any]:
    """What `llmops status` prints: the live gateway (or its saved state when it is down), aliases,
    their history and the last analysis."""
    settings = settings or Settings.load()
    registry = open_registry(settings)
    out: dict[str, Any] = {"aliases": registry.aliases(), "alias_history": registry.alias_history()[-10:]}
    try:
        client = GatewayClient(gateway_url, settings, timeout=5)
        try:
            out["gateway"], out["gateway_live"] = client.status(), True
        finally:
            client.close()
    except (InputError, RuntimeError) as exc:
        out["gateway"] = load_state(state_path(settings)).model_dump(by_alias=True)
        out["gateway_live"], out["gateway_error"] = False, str(exc)
    path = last_analysis_path(settings)
    out["last_analysis"] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    return out
