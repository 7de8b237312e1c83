"""The serving bench runs every backend on the same prompts and checks their greedy tokens agree.

    .venv/bin/pytest tests/serving/test_bench.py -q
"""

from __future__ import annotations

from llmops.cli import main


def test_bench_serve_compares_all_backends(micro_model, tmp_path):
    from serving.bench import bench_serve, markdown_table

    result = bench_serve(micro_model, n_prompts=2, max_new_tokens=4, repeats=1, threads=1, work_dir=tmp_path)
    names = [r["backend"] for r in result["results"]]
    assert names == ["torch eager (HF generate)", "optimum ORTModelForCausalLM", "ORT loop fp32", "ORT loop int8",
                     "ORT loop int4"]
    by_name = {r["backend"]: r for r in result["results"]}
    # Same greedy tokens from torch, optimum and the fp32 loop (int8/int4 are reported, not required).
    assert all(by_name[n]["matches_torch"] for n in names[:3])
    assert all(r["tokens"] == 8 and r["tokens_per_s"] > 0 for r in result["results"])
    assert set(result["ratios"]) >= {"ORT loop fp32 / torch eager", "ORT loop fp32 / optimum"}
    table = markdown_table(result)
    assert "| ORT loop fp32 |" in table and "vs torch" in table


def test_bench_rejects_a_non_model_folder(tmp_path):
    assert main(["bench", "serve", "--model", str(tmp_path), "--out", str(tmp_path / "b.json")]) == 2
