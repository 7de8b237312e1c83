"""ONNX export of a merged Hugging Face model, with a token-parity gate against torch.

    llmops export --model runs/merged --out exports/v1 --dtypes fp32,int8,int4 \
        --prompts-from datasets/python-faq/eval.jsonl --parity-n 16

Output (written to a temp folder beside OUT, renamed to OUT only when the fp32 gate passes):

    OUT/fp32/   model.onnx (+ model.onnx_data for >2 GB models), config, tokenizer, prompt.yaml;
                the graph is optimum's with the serving edits (`serving_graph`): onnxruntime's
                transformer fusions, logits computed for the last position only, constant shapes and
                grouped attention (serving/graph_edits.py)
    OUT/int8/   weight-only int8: every MatMul with a constant weight becomes onnxruntime's
                MatMulNBits (8 bits, symmetric blocks of 32 along the input axis); embeddings and a
                tied lm_head stay fp32, activations stay fp32
    OUT/int4/   the same with 4 bits
    OUT/fp16/   only on CUDA (optimum's fp16 export on device cuda; last-position logits, no fusions)
    OUT/rejected/<dtype>/   a quantised variant under the servable floor, kept for inspection
    OUT/parity.json, OUT/report.md   a llmops.report.Report of kind "export-parity"

The serving edits: optimum's export computes logits for every prompt position, so a prefill of 8
prompts of 78 tokens spends most of a 49152-word lm_head on positions nobody reads; a Slice before
lm_head keeps the last position, which is all the loop (and `generate`) uses. onnxruntime's
transformer optimizer (`onnxruntime.transformers.optimizer`, model type gpt2, as optimum's ORTOptimizer
maps Llama) fuses each RMSNorm with its residual add (SkipSimplifiedLayerNormalization) and the
rotary embeddings (RotaryEmbedding). The exporter also traced the shape arithmetic of every Reshape
and Expand (the attention's head split, its grouped-query `repeat_kv`, the merge of the heads): a
Shape, Gather, Unsqueeze and Concat chain that rebuilds each target on every step, about 3600 of
SmolLM2's 5088 nodes. Where onnxruntime's symbolic shape inference shows a target is fixed up to the
input's own dims, it becomes a constant (`[0, 0, 9, 64]`: keep batch and sequence, split the heads),
and the chains go: 1473 nodes, the same arithmetic, the same outputs bit for bit. Grouped attention
then lets each group of query heads meet its one key/value head, so `repeat_kv` no longer copies the
cache every step (1353 nodes; the same dot products, outputs within float rounding). The parity gate
below runs on the edited graph.

Parity: greedy decoding with the project's ORT loop against torch `generate` on N rendered
prompts. fp32 must produce the same token ids, every token of every prompt, or the gate fails
(exit 1, and OUT is not created; the failed report goes to OUT.parity-failed.{json,md}).
A quantised or fp16 variant must agree on at least SERVABLE_AGREEMENT_PCT of the tokens to be
servable; one below it is moved to OUT/rejected/ with the reason (`llmops serve --variant` refuses
it) and the export as a whole still passes on fp32.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.dataset import read_jsonl  # the project's one JSONL reader: errors name file and line
from llmops.errors import GateFailed, InputError
from llmops.files import atomic_dir, atomic_write_json, atomic_write_text, sha256_file
from llmops.prompts import Prompt, chat_format_of, load_prompt, load_prompt_file
from llmops.report import Finding, Metric, Report, render_markdown
from serving.graph_edits import grouped_attention, static_shapes
from serving.hf_baseline import hf_generate
from serving.runtime import OrtGenerator, SamplingParams, TorchGenerator, common_prefix_len

DTYPES = ("fp32", "int8", "int4", "fp16")
PARITY_KIND = "export-parity"
MIN_PARITY_PROMPTS = 16
"""Eval-split prompts the pipelines' parity gate runs on (pipeline.yaml `--parity-n`; tests/llmops/test_pipeline_gates.py)."""
SERVABLE_AGREEMENT_PCT = 90.0
"""Least % of greedy tokens a quantised (or fp16) variant must share with torch to be servable."""
REJECTED = "rejected"
"""OUT/rejected/<dtype>/: variants under the servable floor, each with reason.json."""
# dtype -> MatMulNBits bits. Block 32 along the input axis (finer than per channel: one outlier
# spoils 32 weights, not a whole row); symmetric, accuracy level 4 (int8 compute of the products).
_NBITS = {"int8": 8, "int4": 4}


@dataclass
class ExportResult:
    out_dir: Path
    variants: dict[str, Path]
    """dtype -> folder with model.onnx (self-contained: config, tokenizer, prompt.yaml)."""
    agreement: dict[str, float | None]
    """dtype -> % of greedy tokens that agree with torch (None where it could not run); rejected ones too."""
    rejected: dict[str, Path]
    """dtype -> OUT/rejected/<dtype>: built, measured, under SERVABLE_AGREEMENT_PCT, not servable."""
    skipped: dict[str, str]
    """dtype -> why it was not exported."""
    passed: bool
    report: Report
    report_path: Path


def serving_prompt(model_dir: Path | None = None) -> Prompt:
    """The prompt a model is served with: its own prompt.yaml if it ships one, else prompts/answer.yaml."""
    if model_dir is not None and (Path(model_dir) / "prompt.yaml").is_file():
        return load_prompt_file(Path(model_dir) / "prompt.yaml")
    try:
        return load_prompt("answer")  # the repository found from the working directory
    except InputError:
        bundled = Path(__file__).resolve().parents[1] / "prompts" / "answer.yaml"
        if bundled.is_file():  # run from elsewhere: this checkout's own prompt
            return load_prompt_file(bundled)
        raise


def parity_prompts(prompt: Prompt, eval_path: Path | None = None, n: int = 16,
                   model_dir: Path | None = None) -> list[str]:
    """N prompt texts rendered from the eval JSONL rows (question, context), or from the prompt's examples.

    With `model_dir`, through that model's chat template (as serving renders them).
    """
    rows: list[dict[str, Any]] = []
    if eval_path is not None:
        eval_path = Path(eval_path)
        if not eval_path.is_file():
            raise InputError("eval file not found", file=str(eval_path))
        for lineno, row in read_jsonl(eval_path):
            if not isinstance(row, dict) or not isinstance(row.get("question"), str):
                raise InputError("a row needs a string 'question'", file=str(eval_path), line=lineno, field="question")
            rows.append({k: row[k] for k in ("question", "context") if isinstance(row.get(k), str)})
            if len(rows) >= n:
                break
    else:
        rows = [{k: v for k, v in ex.items() if k in prompt.variables} for ex in prompt.examples][:n]
    if not rows:
        raise InputError("no parity prompts: give --prompts-from or add examples to the prompt",
                         file=str(eval_path or prompt.path))
    if eval_path is not None and len(rows) < n:
        # A gate asked to compare n prompts must not pass on fewer (an eval split that shrank).
        raise InputError(f"the parity gate was asked for {n} prompts but the eval split has {len(rows)} rows",
                         file=str(eval_path), field="parity_n")
    chat = chat_format_of(model_dir)
    return [prompt.render(chat, **row) for row in rows]


# ---- export steps ------------------------------------------------------------------------------
def _copy_aux(src: Path, dst: Path) -> None:
    """Copy config, tokenizer and prompt files (everything but the ONNX graph and its weights)."""
    for item in src.iterdir():
        if item.is_file() and not item.name.startswith("model.onnx"):
            shutil.copy2(item, dst / item.name)


def optimum_export(model_dir: Path, out: Path, *, fp16: bool = False) -> None:
    import warnings

    from optimum.exporters.onnx import main_export

    with warnings.catch_warnings():
        # The tracer warns about every data-dependent Python branch of the model; parity checks the result.
        warnings.simplefilter("ignore")
        main_export(str(model_dir), output=str(out), task="text-generation-with-past",
                    device="cuda" if fp16 else "cpu", dtype="fp16" if fp16 else "fp32",
                    do_validation=False, local_files_only=True)
    if not (out / "model.onnx").is_file():
        raise InputError(f"optimum wrote no model.onnx (files: {sorted(p.name for p in out.iterdir())})",
                         file=str(model_dir))


LAST_POSITION_NODE = "llmops_last_position"
"""Name of the Slice node that `serving_graph` puts before lm_head (a graph holding it was edited)."""


def _last_position_logits(model: Any) -> bool:
    """Feed lm_head the last position's hidden state only: logits (batch, 1, vocab) instead of
    (batch, seq, vocab). False (graph unchanged) when `logits` is not a MatMul/Gemm of the hidden states."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    producers = [n for n in graph.node if "logits" in n.output]
    if len(producers) != 1 or producers[0].op_type not in ("MatMul", "Gemm") or any(
            n.name == LAST_POSITION_NODE for n in graph.node):
        return False
    head = producers[0]
    names = {"starts": [-1], "ends": [np.iinfo(np.int64).max], "axes": [1]}
    graph.initializer.extend(numpy_helper.from_array(np.array(v, dtype=np.int64), f"{LAST_POSITION_NODE}.{k}")
                             for k, v in names.items())
    sliced = f"{LAST_POSITION_NODE}.hidden"
    node = helper.make_node("Slice", [head.input[0], *(f"{LAST_POSITION_NODE}.{k}" for k in names)], [sliced],
                            name=LAST_POSITION_NODE)
    graph.node.insert(list(graph.node).index(head), node)
    head.input[0] = sliced
    for out in graph.output:
        if out.name == "logits" and len(out.type.tensor_type.shape.dim) == 3:
            dim = out.type.tensor_type.shape.dim[1]
            dim.ClearField("dim_param")
            dim.dim_value = 1
    return True


def serving_graph(onnx_dir: Path, *, fuse: bool = True, static: bool = True) -> dict[str, Any]:
    """The serving edits (module docstring) on OUT/<dtype>/model.onnx, in place: onnxruntime's fusions
    (unless `fuse` is False), last-position logits, then serving/graph_edits.py's constant shapes and
    grouped attention (unless `static` is False). Returns what was done, for the parity report."""
    import logging

    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    path = onnx_dir / "model.onnx"
    large = (onnx_dir / "model.onnx_data").exists()
    model, fused = onnx.load(str(path)), {}
    if fuse:
        quiet = logging.getLogger("onnxruntime.transformers")  # it logs each fusion pass at INFO
        level = quiet.level
        quiet.setLevel(logging.WARNING)
        try:
            # opt_level 0: only the Python fusions; the session applies its own graph optimisations at load.
            config = json.loads((onnx_dir / "config.json").read_text()) if (onnx_dir / "config.json").is_file() else {}
            optimised = optimize_model(model, model_type="gpt2", opt_level=0,
                                       num_heads=int(config.get("num_attention_heads") or 0),
                                       hidden_size=int(config.get("hidden_size") or 0))
        finally:
            quiet.setLevel(level)
        fused = {op: n for op, n in optimised.get_fused_operator_statistics().items() if n}
        model = optimised.model
    sliced = _last_position_logits(model)
    shapes = static_shapes(model) if static else {}
    repeats = grouped_attention(model) if static else 0
    # In the export's temp folder (atomic_dir), so a failure here leaves no OUT behind either way.
    if large:  # the weights are in memory now; the old data file must go, or onnx.save appends to it
        (onnx_dir / "model.onnx_data").unlink()
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location="model.onnx_data")
    else:
        onnx.save(model, str(path))
    return {"fused": fused, "last_position_logits": sliced, "static_shapes": shapes, "kv_repeats_removed": repeats, "nodes": len(model.graph.node)}


def _quantize_weights(fp32_dir: Path, out: Path, bits: int) -> None:
    """Weight-only quantisation: MatMul weights to `bits`-bit blocks, everything else fp32."""
    import logging

    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    out.mkdir(parents=True)
    large = (fp32_dir / "model.onnx_data").exists()
    config = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, accuracy_level=4, bits=bits)
    quant_logger = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = quant_logger.level
    quant_logger.setLevel(logging.WARNING)  # it logs every node at INFO
    try:
        quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32_dir / "model.onnx")), algo_config=config)
        quantizer.process()
        quantizer.model.save_model_to_file(str(out / "model.onnx"), use_external_data_format=large)
    finally:
        quant_logger.setLevel(level)
    _copy_aux(fp32_dir, out)


def _cuda_reason() -> str | None:
    """None when fp16 can be exported and run here, else why not."""
    import onnxruntime as ort
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False); fp16 export runs on GPU runners"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime has no CUDAExecutionProvider (install the gpu extra)"
    return None


# ---- parity ------------------------------------------------------------------------------------
def token_agreement(reference: Sequence[Sequence[int]], candidate: Sequence[Sequence[int]]) -> float:
    """% of tokens that agree: per prompt the common prefix over the longer sequence (tokens after
    the first divergence count as disagreeing, since they continue a different text). 100 iff equal."""
    agreed = sum(common_prefix_len(r, c) for r, c in zip(reference, candidate, strict=True))
    total = sum(max(len(r), len(c)) for r, c in zip(reference, candidate, strict=True))
    return 100.0 if total == 0 else 100.0 * agreed / total


def torch_reference(model_dir: Path, prompts: Sequence[str], max_new_tokens: int) -> tuple[list[list[int]], Any]:
    """Greedy token ids of torch `generate`, one prompt at a time (no padding), and the torch generator."""
    torch_gen = TorchGenerator(model_dir)
    params = SamplingParams(max_new_tokens=max_new_tokens)
    ids = [hf_generate(torch_gen.model, torch_gen.tokenizer, [torch_gen.encode(p)], params)[0] for p in prompts]
    return ids, torch_gen


def parity_check(reference: Sequence[Sequence[int]], onnx_dir: Path, prompts: Sequence[str],
                 max_new_tokens: int, torch_gen: Any = None, threads: int | None = None) -> dict[str, Any]:
    """Run the ORT loop greedily on each prompt and compare its ids with `reference`.

    Returns {"agreement": %, "mismatches": [{index, position, torch, onnx}], "max_abs_logit_diff"}.
    """
    import numpy as np

    gen = OrtGenerator(onnx_dir, threads=threads)
    params = SamplingParams(max_new_tokens=max_new_tokens)
    got = [gen.generate([p], params)[0].token_ids for p in prompts]
    mismatches = []
    for i, (ref, cand) in enumerate(zip(reference, got, strict=True)):
        if list(ref) != list(cand):
            pos = common_prefix_len(ref, cand)
            mismatches.append({"index": i, "position": pos, "torch": list(ref[pos:pos + 4]),
                               "onnx": list(cand[pos:pos + 4])})
    logit_diff = None
    if torch_gen is not None:
        # First-step logits of every prompt: how far the graph is from torch, before argmax hides it.
        diffs = []
        for p in prompts:
            ids = np.array([gen.encode(p)], dtype=np.int64)
            mask = np.ones_like(ids)
            pos = np.arange(ids.shape[1], dtype=np.int64)[None, :]
            ort_logits, _ = gen._prefill(ids, mask, pos)
            torch_logits, _ = torch_gen._prefill(ids, mask, pos)
            diffs.append(float(np.max(np.abs(ort_logits.astype(np.float32) - torch_logits))))
        logit_diff = max(diffs)
    return {"agreement": token_agreement(reference, got), "mismatches": mismatches,
            "max_abs_logit_diff": logit_diff, "outputs": got}


def build_parity_report(model_dir: Path, results: dict[str, dict[str, Any]], skipped: dict[str, str],
                        prompts: Sequence[str], max_new_tokens: int, info: dict[str, Any]) -> Report:
    report = Report(kind=PARITY_KIND, info={"model": str(model_dir), "prompts": len(prompts),
                                            "max_new_tokens": max_new_tokens, "skipped": skipped, **info})
    for dtype, res in results.items():
        gated = dtype == "fp32"
        findings = [Finding(message=f"prompt {m['index']}: first divergence at generated token {m['position']}: "
                                    f"torch {m['torch']} vs onnx {m['onnx']}",
                            field=f"{dtype}/prompt[{m['index']}]", severity="error" if gated else "warning")
                    for m in res["mismatches"]]
        if not gated and not servable(res["agreement"]):
            # The export still passes on fp32; this variant is moved to rejected/ and never served.
            findings.insert(0, Finding(
                message=f"{res['agreement']:.2f}% of greedy tokens agree with torch, under the servable "
                        f"floor of {SERVABLE_AGREEMENT_PCT:.0f}%: not servable, moved to {REJECTED}/{dtype}/",
                field=dtype, severity="warning"))
        report.add_check(f"{dtype} greedy token parity" + ("" if gated else
                                                          f" (servable at >= {SERVABLE_AGREEMENT_PCT:.0f}%)"),
                         findings, summary=f"{res['agreement']:.2f}% tokens agree")
        # passed=None for a variant: its floor decides whether it is served, not whether the export passes.
        report.metrics[f"{dtype}.token_agreement_pct"] = Metric(
            head=res["agreement"], threshold=100.0 if gated else SERVABLE_AGREEMENT_PCT,
            passed=(res["agreement"] == 100.0) if gated else None)
        if res.get("max_abs_logit_diff") is not None:
            report.metrics[f"{dtype}.max_abs_logit_diff"] = Metric(head=res["max_abs_logit_diff"], higher_is_better=False)
    for dtype, reason in skipped.items():
        report.add_check(f"{dtype} export", [Finding(message=f"skipped: {reason}", field=dtype, severity="warning")])
    reference = results["fp32"]["reference"]
    for i, p in enumerate(prompts):
        report.cases.append({
            "id": f"parity-{i}", "suite": "parity", "passed": results["fp32"]["outputs"][i] == reference[i],
            "prompt": p, "assertions": [],
            "output": json.dumps({"torch": reference[i][:16], **{d: r["outputs"][i][:16] for d, r in results.items()}}),
        })
    return report


def servable(agreement: float | None) -> bool:
    """Whether a non-fp32 variant may be served: measured, and at or over the agreement floor."""
    return agreement is not None and agreement >= SERVABLE_AGREEMENT_PCT


# ---- the stage ---------------------------------------------------------------------------------
def export_model(model_dir: str | Path, out_dir: str | Path, dtypes: Sequence[str] = ("fp32", "int8"),
                 prompts: Sequence[str] | None = None, *, prompt: Prompt | None = None,
                 parity_n: int = 16, max_new_tokens: int = 32, threads: int | None = None) -> ExportResult:
    """Export `model_dir` (a merged HF causal LM) to OUT/<dtype>/ and gate fp32 on token parity.

    `prompts` are rendered prompt texts; when None they come from the serving prompt's examples.
    Raises InputError (bad model folder, unknown dtype, OUT exists) or GateFailed (fp32 parity).
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / "config.json").is_file():
        raise InputError("not a Hugging Face model folder (no config.json)", file=str(model_dir))
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        raise InputError(f"unknown dtype(s) {unknown}; choose from {list(DTYPES)}", field="dtypes")
    if out_dir.exists():
        raise InputError("output folder already exists; exports are written once", file=str(out_dir))
    wanted = ["fp32", *[d for d in DTYPES[1:] if d in dtypes]]  # fp32 is always built: it is gated
    prompt = prompt or serving_prompt(model_dir)
    prompts = list(prompts) if prompts is not None else parity_prompts(prompt, None, parity_n, model_dir)
    prompts = prompts[:parity_n]
    if not prompts:
        # Zero prompts would agree 100% and pass a gate that compared nothing.
        raise InputError("the parity gate needs at least one prompt (none given, and the prompt has no examples)",
                         field="prompts")
    skipped: dict[str, str] = {}
    results: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {}
    with atomic_dir(out_dir) as tmp:
        t0 = time.perf_counter()
        optimum_export(model_dir, tmp / "fp32")
        timings["export_fp32_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        graph = {"fp32": serving_graph(tmp / "fp32")}
        timings["serving_graph_s"] = time.perf_counter() - t0
        prompt_yaml = (prompt.path.read_text(encoding="utf-8") if prompt.path
                       else prompt.model_dump_json())
        atomic_write_text(tmp / "fp32" / "prompt.yaml", prompt_yaml)
        for dtype, bits in _NBITS.items():
            if dtype in wanted:
                t0 = time.perf_counter()
                _quantize_weights(tmp / "fp32", tmp / dtype, bits)
                timings[f"quantize_{dtype}_s"] = time.perf_counter() - t0
        if "fp16" in wanted:
            reason = _cuda_reason()
            if reason:
                skipped["fp16"] = reason
            else:
                optimum_export(model_dir, tmp / "fp16", fp16=True)
                # Last-position logits only: the fusions have not been run on an fp16 graph on a device yet.
                graph["fp16"] = serving_graph(tmp / "fp16", fuse=False)
                _copy_aux(tmp / "fp32", tmp / "fp16")
        variants = [d for d in wanted if (tmp / d / "model.onnx").is_file()]

        t0 = time.perf_counter()
        reference, torch_gen = torch_reference(model_dir, prompts, max_new_tokens)
        for dtype in variants:
            results[dtype] = parity_check(reference, tmp / dtype, prompts, max_new_tokens,
                                          torch_gen=torch_gen if dtype == "fp32" else None, threads=threads)
        results["fp32"]["reference"] = reference
        timings["parity_s"] = time.perf_counter() - t0
        info = {"timings": timings, "graph": graph, "sha256": {d: sha256_file(tmp / d / "model.onnx") for d in variants},
                "torch_tokens": sum(len(r) for r in reference)}
        report = build_parity_report(model_dir, results, skipped, prompts, max_new_tokens, info)
        for res in results.values():
            res.pop("outputs", None)
            res.pop("reference", None)
        if not report.passed:
            failed = out_dir.with_name(out_dir.name + ".parity-failed.json")
            atomic_write_json(failed, report.to_dict())
            atomic_write_text(failed.with_suffix(".md"), render_markdown(report))
            raise GateFailed(f"export parity: fp32 ONNX greedy tokens agree {results['fp32']['agreement']:.2f}% "
                             f"with torch (need 100%); report: {failed}")
        rejected = [d for d in variants if d != "fp32" and not servable(results[d]["agreement"])]
        for dtype in rejected:
            (tmp / REJECTED).mkdir(exist_ok=True)
            (tmp / dtype).rename(tmp / REJECTED / dtype)
            atomic_write_json(tmp / REJECTED / dtype / "reason.json", {
                "dtype": dtype, "token_agreement_pct": results[dtype]["agreement"],
                "servable_floor_pct": SERVABLE_AGREEMENT_PCT, "prompts": len(prompts)})
        atomic_write_json(tmp / "parity.json", report.to_dict())
        atomic_write_text(tmp / "report.md", render_markdown(report))
    return ExportResult(out_dir=out_dir, variants={d: out_dir / d for d in variants if d not in rejected},
                        agreement={d: results[d]["agreement"] for d in variants}, skipped=skipped,
                        rejected={d: out_dir / REJECTED / d for d in rejected},
                        passed=True, report=report, report_path=out_dir / "parity.json")
