"""Export, serve and batch-predict commands.

    llmops export --model runs/merged --out exports/v1 --dtypes fp32,int8,int4 --prompts-from datasets/python-faq/eval.jsonl
    llmops serve --model exports/v1 --port 8000
    llmops predict datasets/python-faq/eval.jsonl runs/predictions.jsonl --model exports/v1
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path),
              help="Merged Hugging Face model folder (config.json, weights, tokenizer).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Output folder; must not exist. Gets fp32/, int8/, int4/, fp16/ (CUDA only), rejected/ (variants under the agreement floor), parity.json, report.md.")
@click.option("--dtypes", default="fp32,int8", show_default=True,
              help="Comma-separated: fp32, int8, int4 (weight-only), fp16. fp32 is always built (the parity gate runs on it); "
                   "a variant under 90% greedy-token agreement with torch is moved to rejected/, not served.")
@click.option("--prompts-from", "prompts_from", type=click.Path(path_type=Path), default=None,
              help="Eval JSONL whose questions (and contexts) are the parity prompts; default: the prompt's examples.")
@click.option("--parity-n", default=16, show_default=True, type=click.IntRange(min=1),
              help="Number of parity prompts.")
@click.option("--max-new-tokens", default=32, show_default=True, type=click.IntRange(min=1),
              help="Greedy tokens generated per parity prompt.")
@click.option("--prompt", "prompt_ref", default=None,
              help="Prompt id or file to render parity prompts with (default: MODEL/prompt.yaml, else answer).")
def export(model_dir: Path, out_dir: Path, dtypes: str, prompts_from: Path | None, parity_n: int,
           max_new_tokens: int, prompt_ref: str | None) -> None:
    """Export MODEL to ONNX (fp32, weight-only int8/int4, fp16 on CUDA) and gate fp32 on greedy token parity with torch."""
    from llmops.prompts import load_prompt
    from serving.export import SERVABLE_AGREEMENT_PCT, export_model, parity_prompts, serving_prompt

    prompt = load_prompt(prompt_ref) if prompt_ref else serving_prompt(model_dir)
    prompts = parity_prompts(prompt, prompts_from, parity_n)
    result = export_model(model_dir, out_dir, [d.strip() for d in dtypes.split(",") if d.strip()], prompts,
                          prompt=prompt, parity_n=parity_n, max_new_tokens=max_new_tokens)
    for dtype, path in result.variants.items():
        click.echo(f"{dtype}: {path}  token agreement with torch: {result.agreement[dtype]:.2f}%")
    for dtype, path in result.rejected.items():
        click.echo(f"{dtype}: NOT SERVABLE, {result.agreement[dtype]:.2f}% token agreement with torch "
                   f"(floor {SERVABLE_AGREEMENT_PCT:.0f}%); kept in {path}")
    for dtype, reason in result.skipped.items():
        click.echo(f"{dtype}: skipped ({reason})")
    click.echo(f"parity gate passed; report: {result.report_path}")


@click.command()
@click.option("--model", "model_dir", default=None, type=click.Path(path_type=Path),
              help="Export folder (serves fp32/ unless --variant), a folder with model.onnx, or an HF folder for torch. "
                   "Without it: the blue/green gateway and its two worker processes (as `llmops gateway run`).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--backend", type=click.Choice(["onnx", "torch"]), default="onnx", show_default=True)
@click.option("--variant", default=None, help="Export variant to serve: fp32 (default), int8, int4, fp16.")
@click.option("--prompt", "prompt_ref", default=None,
              help="Prompt id or file for chat requests (default: MODEL/prompt.yaml, else prompts/answer.yaml).")
@click.option("--model-id", default=None, help="Name shown by /v1/models (default: the model folder's name).")
@click.option("--threads", default=None, type=int, help="ORT intra-op / torch threads (default: all cores).")
@click.option("--rate-limit", default=None, metavar="RATE",
              help="Requests to /v1/* per client (API key, else address), e.g. '600/minute'; 'off' for none "
                   "(default: serving/ratelimit.py DEFAULT_RATE).")
@click.option("--token-rate-limit", default=None, metavar="RATE",
              help="Estimated tokens (prompt characters / 4 + max_tokens) per client, e.g. '100000/minute'; 'off' "
                   "for none (default: serving/ratelimit.py DEFAULT_TOKEN_RATE).")
@click.option("--auth", type=click.Choice(["keys", "off"]), default="keys", show_default=True,
              help="keys: /v1/* needs an API key whose role holds `chat` (serving/auth.py); off: only for a "
                   "server no one else reaches (loopback, behind a gateway).")
@click.option("--max-batch", default=16, show_default=True, type=click.IntRange(min=1),
              help="Most sequences decoded together (continuous batching, serving/batching.py).")
@click.option("--max-waiting", default=64, show_default=True, type=click.IntRange(min=1),
              help="Most sequences waiting for a batch row; a request over it gets 503 server_busy.")
def serve(model_dir: Path | None, host: str, port: int, backend: str, variant: str | None, prompt_ref: str | None,
          model_id: str | None, threads: int | None, rate_limit: str | None, token_rate_limit: str | None, auth: str,
          max_batch: int, max_waiting: int) -> None:
    """Serve MODEL over an OpenAI-compatible HTTP API with uvicorn (one process), or, without --model,
    the blue/green topology: a gateway that routes /v1/* by weight to a blue and a green worker."""
    from serving.auth import check_mode, insecure_notice
    from serving.ratelimit import DEFAULT_RATE, DEFAULT_TOKEN_RATE

    check_mode(auth, host)  # before any model loads
    if auth == "off":
        click.echo(insecure_notice(host, port), err=True)
    if model_dir is None:
        from serving.gateway.app import run_gateway
        from serving.gateway.core import GatewayOptions

        run_gateway(options=GatewayOptions(host=host, port=port, worker_threads=threads,
                                           rate_limit=rate_limit or DEFAULT_RATE,
                                           token_rate_limit=token_rate_limit or DEFAULT_TOKEN_RATE, auth=auth))
        return
    import uvicorn

    from serving.app import ServeLimits, create_app, default_model_id
    from serving.runtime import find_onnx_dir

    served = find_onnx_dir(model_dir, variant) if backend == "onnx" and variant else model_dir
    app = create_app(served, prompt_ref, backend=backend, threads=threads, model_id=model_id or default_model_id(served),
                     limits=ServeLimits(rate_limit=rate_limit or DEFAULT_RATE, max_batch=max_batch,
                                        token_rate_limit=token_rate_limit or DEFAULT_TOKEN_RATE,
                                        max_waiting=max_waiting), auth=auth)
    click.echo(f"serving {served} ({backend}) on http://{host}:{port}", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


@click.command()
@click.argument("in_path", type=click.Path(path_type=Path))
@click.argument("out_path", type=click.Path(path_type=Path))
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path),
              help="Export folder or model.onnx folder (or HF folder with --backend torch).")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--backend", type=click.Choice(["onnx", "torch"]), default="onnx", show_default=True)
@click.option("--max-new-tokens", default=None, type=click.IntRange(min=1),
              help="Default: the prompt's params.max_tokens.")
def predict(in_path: Path, out_path: Path, model_dir: Path, batch_size: int, backend: str,
            max_new_tokens: int | None) -> None:
    """Generate an output row for every row of IN_PATH into OUT_PATH, resuming where a previous run stopped."""
    from serving.predict import predict_file

    res = predict_file(in_path, out_path, model_dir, batch_size=batch_size, backend=backend,
                       max_new_tokens=max_new_tokens)
    note = " (cut a truncated last line)" if res.dropped_partial_line else ""
    click.echo(f"{res.written} rows written, {res.already_done} already done, {res.total} in total{note}: {out_path}")
