"""Hyper-parameter sweep (Optuna) over the LoRA fine-tune, minimising eval loss.

    llmops train --sweep 8                  # 8 trials on training/config.yaml
    llmops train --sweep 8 max_steps=50     # with overrides, as for a single run

Each trial is a full `train()` on the same config with three values replaced: learning_rate
(log-uniform 1e-4..5e-3), lora_r (4, 8 or 16) and epochs (1..4). Trials run one after the other,
each into its own run folder out_dir/trial-<n>; the TPE sampler is seeded, so the same config,
data and seed propose the same trials. out_dir/sweep.json records every trial's params and
metrics and the best trial. Note that epochs has no effect when the config sets max_steps > 0.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from llmops.errors import InputError
from llmops.files import atomic_write_json
from llmops.settings import Settings
from training.config import TrainConfig
from training.finetune import train

LEARNING_RATE = (1e-4, 5e-3)
LORA_R = (4, 8, 16)
EPOCHS = (1, 4)


def suggest(trial) -> dict[str, Any]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", *LEARNING_RATE, log=True),
        "lora_r": trial.suggest_categorical("lora_r", list(LORA_R)),
        "epochs": trial.suggest_int("epochs", *EPOCHS),
    }


def format_table(summary: dict[str, Any]) -> str:
    best = (summary.get("best") or {}).get("number")
    rows = [f"{'trial':>5}  {'learning_rate':>13}  {'lora_r':>6}  {'epochs':>6}  {'eval_loss':>9}  "
            f"{'perplexity':>10}  state"]
    for t in summary["trials"]:
        p, m = t["params"], t.get("metrics") or {}
        loss = f"{m['eval_loss']:.4f}" if "eval_loss" in m else "-"
        ppl = f"{m['perplexity']:.2f}" if "perplexity" in m else "-"
        mark = "  <- best" if t["number"] == best else ""
        rows.append(f"{t['number']:>5}  {p['learning_rate']:>13.3e}  {p['lora_r']:>6}  {p['epochs']:>6}  "
                    f"{loss:>9}  {ppl:>10}  {t['state']}{mark}")
    return "\n".join(rows)


def best_overrides(params: dict[str, Any]) -> list[str]:
    """The best params as `key=value` overrides for `llmops train` (exact values, YAML scalars)."""
    return [f"learning_rate={params['learning_rate']!r}", f"lora_r={params['lora_r']}",
            f"epochs={params['epochs']}"]


def run_sweep(cfg: TrainConfig, settings: Settings | None, n_trials: int, out_dir: Path, seed: int, *,
              progress: bool = False) -> dict[str, Any]:
    """Run `n_trials` trainings (TPE, seeded), write out_dir/sweep.json and print a table; return the summary."""
    import optuna

    if n_trials < 1:
        raise InputError("--sweep needs at least 1 trial", field="sweep")
    settings = settings or Settings.load()
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise InputError("the sweep folder already exists and is not empty", file=str(out_dir))

    records: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial)
        data = cfg.model_dump()
        data.update(params, epochs=float(params["epochs"]))
        trial_cfg = TrainConfig(**data)
        run_dir = out_dir / f"trial-{trial.number}"
        record = {"number": trial.number, "params": params, "run_dir": str(run_dir), "state": "RUNNING"}
        records.append(record)
        result = train(trial_cfg, settings, run_dir=run_dir, progress=progress)
        record["metrics"] = result.metrics
        loss = float(result.metrics["eval_loss"])
        if not math.isfinite(loss):
            record["state"] = "FAIL"
            raise optuna.TrialPruned(f"eval_loss is {loss}")
        record["state"] = "COMPLETE"
        return loss

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed),
                                study_name=f"sweep-{out_dir.name}")
    try:
        study.optimize(objective, n_trials=n_trials, catch=())
    finally:
        # Trials that raised are recorded too, and sweep.json is written even when one fails.
        for rec in records:
            if rec["state"] == "RUNNING":
                rec["state"] = "FAIL"
        done = [r for r in records if r["state"] == "COMPLETE"]
        best = min(done, key=lambda r: r["metrics"]["eval_loss"]) if done else None
        summary = {
            "objective": "eval_loss", "direction": "minimize", "sampler": "TPESampler", "seed": seed,
            "n_trials": n_trials, "search_space": {"learning_rate": {"low": LEARNING_RATE[0],
                                                                     "high": LEARNING_RATE[1], "log": True},
                                                   "lora_r": list(LORA_R),
                                                   "epochs": {"low": EPOCHS[0], "high": EPOCHS[1]}},
            "base_config": cfg.model_dump(), "trials": records,
            "best": {"number": best["number"], "params": best["params"], "eval_loss": best["metrics"]["eval_loss"],
                     "run_dir": best["run_dir"], "overrides": best_overrides(best["params"])} if best else None,
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out_dir / "sweep.json", summary)
        print(format_table(summary))
        if cfg.max_steps > 0:
            print(f"note: max_steps={cfg.max_steps} is set, so epochs did not change these trials")
    return summary
