"""The serving bench runs every backend on the same token ids, checks their greedy tokens agree and
puts each one against the memory-bandwidth roofline measured in the same run.

    .venv/bin/pytest tests/serving/test_bench.py -q
"""

from __future__ import annotations

import json
import sys
import types
import zipfile
from pathlib import Path

import pytest

from llmops.cli import main

LLAMA_CPP_MISSING = "not installed: pip install llama-cpp-python==0.3.36 (compiles ~20 min)"


def test_bench_serve_compares_all_backends(untied_model, tmp_path, monkeypatch):
    from serving.bench import bench_serve, markdown_table

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` fails, as where it is not installed
    # Random untied weights: greedy tokens vary by prompt and step, so a padding mistake shows as
    # disagreement; the two prompts differ in length, so every batched backend pads.
    result = bench_serve(untied_model, n_prompts=2, max_new_tokens=4, repeats=1, threads=1, work_dir=tmp_path,
                         bandwidth_bytes=64 << 20)
    names = [r["backend"] for r in result["results"]]
    assert names == ["torch eager (HF generate)", "optimum ORTModelForCausalLM", "ORT loop fp32", "ORT loop int8",
                     "ORT loop int4", "onnxruntime-genai fp32", "onnxruntime-genai int4", "llama.cpp GGUF"]
    by_name = {r["backend"]: r for r in result["results"]}
    # The same greedy tokens from every fp32 backend (the quantised ones are reported, not required to agree).
    fp32 = ["torch eager (HF generate)", "optimum ORTModelForCausalLM", "ORT loop fp32", "onnxruntime-genai fp32"]
    assert all(by_name[n]["matches_torch"] for n in fp32)
    timed = [r for r in result["results"] if r["backend"] != "llama.cpp GGUF"]
    assert all(r["tokens"] == 8 and r["tokens_per_s"] > 0 and r["batch_size"] == 2 for r in timed)
    # Every timed row against the roofline of the bandwidth measured in this run.
    bandwidth = result["setup"]["bandwidth_gb_s"] * 1e9
    assert bandwidth > 1e9
    for r in timed:
        assert r["roofline_tokens_per_s"] == pytest.approx(2 * bandwidth / r["weight_bytes"])
        assert 0 < r["roofline_share"] <= 1
        assert r["roofline_share"] == pytest.approx(r["tokens_per_s"] / r["roofline_tokens_per_s"])
    # fp32 reads the same weights in every runtime (the untied input table is only gathered from),
    # give or take onnxruntime-genai's rotary cos/sin tables (4% of a micro model, 0.4% of SmolLM2);
    # its int4 reads under a third of them.
    torch_bytes = by_name["torch eager (HF generate)"]["weight_bytes"]
    # The loop's serving graph multiplies by optimum's weights, all of them; its edits only change small
    # int64 constants (the last-position Slice's bounds, the constant shapes that replace traced ones).
    import onnx
    from onnx import numpy_helper

    def matmul_weights(folder):
        graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
        read = {n.input[1] for n in graph.node if n.op_type in ("MatMul", "Gemm")}
        return sorted(numpy_helper.to_array(t).nbytes for t in graph.initializer if t.name in read)

    served = matmul_weights(tmp_path / "export" / "fp32")
    assert len(served) > 10 and served == matmul_weights(tmp_path / "optimum")
    assert abs(by_name["ORT loop fp32"]["weight_bytes"] - by_name["optimum ORTModelForCausalLM"]["weight_bytes"]) < 1024
    for n in fp32[1:]:
        assert by_name[n]["weight_bytes"] == pytest.approx(torch_bytes, rel=0.05), n
    assert by_name["onnxruntime-genai int4"]["weight_bytes"] < torch_bytes / 3
    llama = by_name["llama.cpp GGUF"]
    assert llama["note"] == LLAMA_CPP_MISSING
    assert llama["tokens_per_s"] is None and llama["roofline_share"] is None and llama["batch_size"] == 1
    assert set(result["ratios"]) >= {"ORT loop fp32 / torch eager", "ORT loop fp32 / optimum",
                                     "ORT loop fp32 / onnxruntime-genai fp32", "ORT loop int4 / onnxruntime-genai int4"}
    table = markdown_table(result)
    assert "| ORT loop fp32 |" in table and "vs torch" in table and "share of roofline" in table
    assert f"| llama.cpp GGUF | 1 | | | n/a | | | | | | {LLAMA_CPP_MISSING} |" in table


def test_roofline_arithmetic():
    from serving.bench import measure_bandwidth, roofline_tokens_per_s

    # 8 rows per step * 28e9 B/s / 538e6 B read per step (SmolLM2-135M in fp32) = 416 tokens/s.
    assert roofline_tokens_per_s(8, 28e9, 538_000_000) == pytest.approx(416.36, abs=0.01)
    assert roofline_tokens_per_s(1, 28e9, 538_000_000) == pytest.approx(416.36 / 8, abs=0.01)
    assert measure_bandwidth(8 << 20, threads=2, repeats=2) > 1e8  # bytes/s, read + write


def test_weight_bytes_count_what_a_decode_step_reads(tmp_path):
    import numpy as np
    import onnx
    from gguf import GGUFWriter
    from onnx import TensorProto, helper, numpy_helper
    from transformers import LlamaConfig, LlamaForCausalLM

    from serving.bench import gguf_weight_bytes, onnx_weight_bytes, torch_weight_bytes

    # ONNX: a table only Gather reads counts 0; the same table read by a Transpose too (a tied head)
    # counts in full; quantised blocks count as stored; 4-bit tensors at half a byte per value.
    inits = [numpy_helper.from_array(np.zeros((100, 8), np.float32), "gathered"),  # 0
             numpy_helper.from_array(np.zeros((100, 8), np.float32), "tied"),  # 3,200
             numpy_helper.from_array(np.zeros((8, 2, 16), np.uint8), "blocks"),  # 256
             helper.make_tensor("nibbles", TensorProto.INT4, [10], [1] * 10),  # 5
             # the fused rotary embedding's tables are indexed by position, like an embedding: 0
             numpy_helper.from_array(np.zeros((64, 4), np.float32), "cos_cache"),
             numpy_helper.from_array(np.zeros((64, 4), np.float32), "sin_cache")]
    nodes = [helper.make_node("Gather", ["gathered", "ids"], ["a"]), helper.make_node("Gather", ["tied", "ids"], ["b"]),
             helper.make_node("Transpose", ["tied"], ["t"]), helper.make_node("Identity", ["blocks"], ["c"]),
             helper.make_node("Identity", ["nibbles"], ["d"]),
             helper.make_node("RotaryEmbedding", ["b", "ids", "cos_cache", "sin_cache"], ["r"], domain="com.microsoft")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "abtcdr"], inits)
    onnx.save(helper.make_model(graph), str(tmp_path / "model.onnx"))
    assert onnx_weight_bytes(tmp_path) == 3200 + 256 + 5

    # GGUF: token_embd counts only when no output.weight exists (tied: llama.cpp reads it as the head).
    def gguf(path: Path, untied: bool) -> Path:
        writer = GGUFWriter(str(path), "llama")
        writer.add_tensor("token_embd.weight", np.zeros((100, 8), np.float32))  # 3,200
        writer.add_tensor("blk.0.ffn_up.weight", np.zeros((8, 8), np.float32))  # 256
        if untied:
            writer.add_tensor("output.weight", np.zeros((50, 8), np.float32))  # 1,600
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path

    assert gguf_weight_bytes(gguf(tmp_path / "tied.gguf", untied=False)) == 3200 + 256
    assert gguf_weight_bytes(gguf(tmp_path / "untied.gguf", untied=True)) == 256 + 1600

    # torch: 4 bytes per fp32 parameter, an untied input embedding excluded.
    for tied in (True, False):
        model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tied))
        params = sum(p.numel() for p in model.parameters())
        assert torch_weight_bytes(model) == 4 * (params - (0 if tied else 64 * 16))


def test_llama_cpp_decodes_one_sequence_at_a_time_from_an_empty_cache(monkeypatch):
    from serving.peers import LlamaCppGenerator

    calls: list = []

    class FakeLlama:
        def __init__(self, path: str, **kwargs):
            calls.append(("init", path, kwargs))

        def reset(self) -> None:
            calls.append("reset")

        def generate(self, tokens: list[int], **kwargs):
            calls.append(("generate", tokens, kwargs))
            yield from [len(tokens), 7, 2, 9, 9]  # 2 is eos

    monkeypatch.setitem(sys.modules, "llama_cpp", types.SimpleNamespace(Llama=FakeLlama))
    gen = LlamaCppGenerator(Path("m.gguf"), threads=2, n_ctx=64)
    # Cut after eos (kept), as every other backend; and at max_new_tokens.
    assert gen.generate_ids([[5, 6, 7], [5, 6]], 8, eos=2) == [[3, 7, 2], [2]]
    assert gen.generate_ids([[5]], 2, eos=None) == [[1, 7]]
    assert calls[0] == ("init", "m.gguf", {"n_ctx": 64, "n_threads": 2, "n_threads_batch": 2, "verbose": False})
    # A reset before every prompt: no prefill is skipped by reusing the previous prompt's cache.
    assert calls[1:] == ["reset", ("generate", [5, 6, 7], calls[2][2]), "reset", ("generate", [5, 6], calls[2][2]),
                         "reset", ("generate", [5], calls[2][2])]
    assert calls[2][2]["temp"] == 0.0 and calls[2][2]["top_k"] == 1 and calls[2][2]["repeat_penalty"] == 1.0


def test_the_genai_padding_id_is_one_no_prompt_contains():
    from serving.peers import unused_token_id

    assert unused_token_id([[0, 1, 3], [2, 1]], 10) == 4
    with pytest.raises(ValueError, match="none is free"):
        unused_token_id([[0, 1, 2]], 3)


def test_the_llama_cpp_row_reads_the_original_gguf_of_a_prepared_base_model(tmp_path, monkeypatch):
    from llmops.cli.bench import _original_gguf
    from training.base_models import INFO_FILE, SMOLLM2, wheel_path

    monkeypatch.setenv("LLMOPS_CACHE", str(tmp_path / "cache"))
    base = tmp_path / "base"
    base.mkdir()
    (base / INFO_FILE).write_text(json.dumps({"name": SMOLLM2.name}))
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    assert _original_gguf(base, tmp_path) is None  # llama-cpp-python missing: nothing to extract it for
    monkeypatch.setitem(sys.modules, "llama_cpp", types.ModuleType("llama_cpp"))
    assert _original_gguf(base, tmp_path) is None  # the wheel is not fetched
    wheel_path(SMOLLM2).parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel_path(SMOLLM2), "w") as zf:
        zf.writestr(SMOLLM2.member, b"GGUF bytes")
    got = _original_gguf(base, tmp_path)
    assert got == tmp_path / Path(SMOLLM2.member).name and got.read_bytes() == b"GGUF bytes"
    assert _original_gguf(tmp_path, tmp_path) is None  # not a prepared base model folder


def test_bench_rejects_a_non_model_folder(tmp_path):
    assert main(["bench", "serve", "--model", str(tmp_path), "--out", str(tmp_path / "b.json")]) == 2
