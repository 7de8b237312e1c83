"""Benchmarks that print ratios measured in one run (speed targets live here, never in tests).

    llmops bench serve --n-prompts 8 --max-new-tokens 32 --out runs/bench-serve.json
    llmops bench batching --model exports/v1 --streams 16 --out runs/bench-batching.json
"""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def bench() -> None:
    """Speed benchmarks."""


@bench.command("serve")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=None,
              help="Merged Hugging Face model folder; default: a micro model built in a temp folder.")
@click.option("--n-prompts", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--max-new-tokens", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=None, type=click.IntRange(min=1), help="Default: all prompts in one batch.")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1), help="Timed runs; best is kept.")
@click.option("--threads", default=None, type=click.IntRange(min=1), help="Default: all cores.")
@click.option("--out", "out_path", type=click.Path(path_type=Path), default=Path("bench-serve.json"),
              show_default=True, help="Where to write the JSON results.")
def serve_bench(model_dir: Path | None, n_prompts: int, max_new_tokens: int, batch_size: int | None,
                repeats: int, threads: int | None, out_path: Path) -> None:
    """Tokens/s of torch eager, optimum ORTModel and the project's ORT loop (fp32, int8, int4) on the same prompts."""
    import tempfile

    from llmops.errors import InputError
    from serving.bench import bench_serve, markdown_table, write_bench

    if model_dir is not None and not (model_dir / "config.json").is_file():
        raise InputError("not a Hugging Face model folder (no config.json)", file=str(model_dir))
    with tempfile.TemporaryDirectory(prefix="llmops-bench-") as tmp:
        if model_dir is None:
            from training.micro import build_micro_model

            model_dir = build_micro_model(Path(tmp) / "micro")
        result = bench_serve(model_dir, n_prompts=n_prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                             repeats=repeats, threads=threads, work_dir=tmp)
    click.echo(markdown_table(result))
    write_bench(result, out_path)
    click.echo(f"\nwritten: {out_path}")


@bench.command("batching")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=None,
              help="ONNX export (root or model.onnx folder) or merged Hugging Face model folder (exported to fp32 "
                   "first); default: a micro model built and exported in a temp folder.")
@click.option("--streams", default=16, show_default=True, type=click.IntRange(min=2),
              help="Concurrent streams of the second level (the first is 1 stream).")
@click.option("--requests", "requests_per_stream", default=2, show_default=True, type=click.IntRange(min=1),
              help="Streamed requests each client sends one after another.")
@click.option("--max-tokens", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--threads", default=None, type=click.IntRange(min=1), help="Server's ORT threads; default: all cores.")
@click.option("--out", "out_path", type=click.Path(path_type=Path), default=Path("bench-batching.json"),
              show_default=True, help="Where to write the JSON results.")
def batching_bench(model_dir: Path | None, streams: int, requests_per_stream: int, max_tokens: int,
                   threads: int | None, out_path: Path) -> None:
    """Aggregate tokens/s and TTFT p95 of a real server at 1 and N concurrent streams (continuous batching)."""
    import tempfile

    from llmops.errors import InputError
    from serving.bench import batching_table, bench_batching, write_bench

    if model_dir is not None and not model_dir.is_dir():
        raise InputError("model folder not found", file=str(model_dir))
    with tempfile.TemporaryDirectory(prefix="llmops-bench-") as tmp:
        if model_dir is None:
            from training.micro import build_micro_model

            model_dir = build_micro_model(Path(tmp) / "micro")
        result = bench_batching(model_dir, streams=streams, requests_per_stream=requests_per_stream,
                                max_tokens=max_tokens, threads=threads, work_dir=tmp)
    click.echo(batching_table(result))
    write_bench(result, out_path)
    click.echo(f"\nwritten: {out_path}")


@bench.command("gate")
def gate_bench() -> None:
    """Time `llmops gate pr` on a typical change (a prompt edit): cold cache, then an unchanged re-run."""
    import os

    from llmops.jobs.bench import bench_gate
    from llmops.settings import Settings

    result = bench_gate(Settings.load(), echo=click.echo)
    click.echo(f"\n| run | seconds | goal |\n|---|---|---|\n| cold (empty result cache) | {result['cold']} | ≤ 90 |\n"
               f"| unchanged re-run (cached) | {result['cached']} | ≤ 10 |\n")
    click.echo(f"model under test: {result['model']} (ready in {result['model_ready_s']} s, built once and cached); "
               f"{result['cases']} cases + {result['rows']} rows; {os.cpu_count()} CPUs")


def _register_gateway_benches() -> None:
    """`llmops bench gateway` and `llmops bench rollback` are the gateway group's benches, under bench too."""
    from llmops.cli.release import gateway_bench, gateway_bench_rollback

    bench.add_command(gateway_bench, "gateway")
    bench.add_command(gateway_bench_rollback, "rollback")


_register_gateway_benches()
