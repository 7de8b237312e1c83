"""One report schema for every gate (`report.json`), and its Markdown rendering (`report.md`).

report.md is always rendered from the Report object, never computed separately.
Schema (version 1):
  {"schema": 1, "kind": str, "verdict": "pass"|"fail", "created": iso8601,
   "checks": [{"name", "passed", "findings": [{"file", "line", "field", "message", "severity"}]}],
   "metrics": {name: {"head", "base", "delta", "threshold", "passed"}},
   "cases": [{"id", "suite", "passed", "prompt", "output", "assertions": [{"type", "passed", "message"}]}],
   "info": {...free-form context: model version, endpoint, timings...}}
"""

from __future__ import annotations

import datetime as dt
import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmops.files import atomic_write_json, atomic_write_text

SCHEMA_VERSION = 1
MARKER = "<!-- llmops-eval-report -->"
GITHUB_COMMENT_LIMIT = 65536


@dataclass
class Finding:
    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None
    severity: str = "error"  # "error" fails the check; "warning" is reported only

    def where(self) -> str:
        out = self.file or ""
        if self.line is not None:
            out += f":{self.line}"
        if self.field:
            out += f" [{self.field}]"
        return out


@dataclass
class Check:
    name: str
    passed: bool
    findings: list[Finding] = field(default_factory=list)
    summary: str = ""


@dataclass
class Metric:
    head: float | None
    base: float | None = None
    threshold: float | None = None
    passed: bool | None = None
    higher_is_better: bool = True

    @property
    def delta(self) -> float | None:
        if self.head is None or self.base is None:
            return None
        return self.head - self.base


@dataclass
class Report:
    kind: str
    checks: list[Check] = field(default_factory=list)
    metrics: dict[str, Metric] = field(default_factory=dict)
    cases: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks) and all(
            m.passed is not False for m in self.metrics.values()
        )

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    def add_check(self, name: str, findings: list[Finding], summary: str = "") -> Check:
        failed = any(f.severity == "error" for f in findings)
        check = Check(name=name, passed=not failed, findings=findings, summary=summary)
        self.checks.append(check)
        return check

    def to_dict(self) -> dict[str, Any]:
        metrics = {}
        for name, m in self.metrics.items():
            row = asdict(m)
            row["delta"] = m.delta
            metrics[name] = row
        return {
            "schema": SCHEMA_VERSION,
            "kind": self.kind,
            "verdict": self.verdict,
            "created": self.created,
            "checks": [asdict(c) for c in self.checks],
            "metrics": metrics,
            "cases": self.cases,
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        rep = cls(kind=data.get("kind", "unknown"), created=data.get("created", ""))
        for c in data.get("checks", []):
            rep.checks.append(Check(name=c["name"], passed=c["passed"], summary=c.get("summary", ""),
                                    findings=[Finding(**f) for f in c.get("findings", [])]))
        for name, m in data.get("metrics", {}).items():
            rep.metrics[name] = Metric(head=m.get("head"), base=m.get("base"), threshold=m.get("threshold"),
                                       passed=m.get("passed"), higher_is_better=m.get("higher_is_better", True))
        rep.cases = list(data.get("cases", []))
        rep.info = dict(data.get("info", {}))
        return rep

    @classmethod
    def load(cls, path: Path) -> Report:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        """Write report.json and report.md into `out_dir`, each atomically."""
        out_dir = Path(out_dir)
        atomic_write_json(out_dir / "report.json", self.to_dict())
        atomic_write_text(out_dir / "report.md", render_markdown(self))
        return out_dir / "report.json", out_dir / "report.md"


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.4f}".rstrip("0").rstrip(".") if value != 0 else "0"


def _md_cell(text: Any) -> str:
    """Escape a value for a Markdown table cell: HTML-escaped, no pipes or newlines."""
    return html.escape(str(text)).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report, limit: int = GITHUB_COMMENT_LIMIT) -> str:
    """Verdict, metrics table, failures, findings; collapsed where long, cut to `limit` characters."""
    icon = "✅" if report.passed else "❌"
    lines = [MARKER, f"## {icon} {report.kind}: **{report.verdict.upper()}**", ""]
    failed_checks = [c for c in report.checks if not c.passed]
    failed_cases = [c for c in report.cases if not c.get("passed", True)]
    lines.append(
        f"{len(report.checks) - len(failed_checks)}/{len(report.checks)} checks passed, "
        f"{len(report.cases) - len(failed_cases)}/{len(report.cases)} cases passed."
    )
    for key in ("model", "endpoint", "base_ref", "baseline"):
        if key in report.info:
            lines.append(f"- {key}: `{_md_cell(report.info[key])}`")
    lines.append("")
    changed = report.info.get("changed") or []
    if changed:
        shown = "".join(f"- `{_md_cell(path)}`\n" for path in changed[:50])
        more = f"- … and {len(changed) - 50} more\n" if len(changed) > 50 else ""
        lines += [f"<details><summary>Changed files ({len(changed)})</summary>", "", shown + more, "</details>", ""]
    if report.metrics:
        lines += ["| metric | base | head | delta | threshold | |", "|---|---|---|---|---|---|"]
        for name, m in sorted(report.metrics.items()):
            mark = "" if m.passed is None else ("✅" if m.passed else "❌ regression")
            lines.append(f"| {_md_cell(name)} | {_fmt(m.base)} | {_fmt(m.head)} | {_fmt(m.delta)} | "
                         f"{_fmt(m.threshold)} | {mark} |")
        lines.append("")
    if report.checks:
        lines += ["| check | result | findings |", "|---|---|---|"]
        for c in report.checks:
            lines.append(f"| {_md_cell(c.name)} | {'✅' if c.passed else '❌'} | {len(c.findings)} |")
        lines.append("")
    if failed_cases:
        lines += [f"<details><summary>Failed cases ({len(failed_cases)})</summary>", ""]
        for case in failed_cases:
            lines.append(f"#### `{_md_cell(case.get('id'))}`")
            for a in case.get("assertions", []):
                if not a.get("passed", True):
                    lines.append(f"- ❌ `{_md_cell(a.get('type'))}`: {_md_cell(a.get('message', ''))}")
            lines.append("")
            lines.append("<pre>prompt: " + html.escape(str(case.get("prompt", ""))[:600]) + "</pre>")
            lines.append("<pre>output: " + html.escape(str(case.get("output", ""))[:400]) + "</pre>")
            lines.append("")
        lines += ["</details>", ""]
    findings = [(c.name, f) for c in report.checks for f in c.findings]
    if findings:
        lines += [f"<details><summary>Findings ({len(findings)})</summary>", "",
                  "| check | where | message |", "|---|---|---|"]
        for name, f in findings:
            lines.append(f"| {_md_cell(name)} | {_md_cell(f.where())} | {_md_cell(f.message)} |")
        lines += ["", "</details>", ""]
    text = "\n".join(lines)
    if len(text) > limit:
        note = "\n\n</details>\n\n> ⚠️ Report truncated to fit GitHub's comment limit; see the report.json artifact.\n"
        text = text[: limit - len(note)] + note
    return text
