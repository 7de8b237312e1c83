"""Export and its parity gate.

    .venv/bin/pytest tests/serving/test_export.py -q
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

from llmops.cli import main
from llmops.errors import GateFailed, InputError
from llmops.report import Report


def corrupt_onnx(src_dir: Path, dst_dir: Path, scale: float = 0.5) -> Path:
    """Copy an export variant and corrupt its weights: seeded noise of `scale` x std on every float
    initializer, and the (vocab, hidden) embedding shifted by one row, as a
    mis-mapped checkpoint would be. Noise alone does not move the trained micro model's argmax."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    shutil.copytree(src_dir, dst_dir)
    model = onnx.load(str(dst_dir / "model.onnx"))
    rng = np.random.default_rng(0)
    # The embedding: the table the input ids are gathered from (in a fused graph the rotary tables outsize it).
    [largest] = [n.input[0] for n in model.graph.node if n.op_type == "Gather" and n.input[1] == "input_ids"]
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.size > 1:
            noisy = arr + rng.normal(0, scale * (arr.std() + 1e-3), arr.shape).astype(np.float32)
            if init.name == largest:
                noisy = np.roll(noisy, 1, axis=0)
            init.CopyFrom(numpy_helper.from_array(noisy, init.name))
    onnx.save(model, str(dst_dir / "model.onnx"))
    return dst_dir


def test_export_writes_fp32_int8_and_passes_parity(exported):
    for dtype in ("fp32", "int8", "int4"):
        folder = exported.variants[dtype]
        # Self-contained: graph, config, tokenizer and the serving prompt.
        for name in ("model.onnx", "config.json", "tokenizer.json", "prompt.yaml"):
            assert (folder / name).is_file(), f"{dtype}/{name}"
    assert exported.passed
    assert exported.agreement["fp32"] == 100.0
    # Weight-only quantisation keeps the micro model's greedy answers, so both variants are servable.
    assert exported.agreement["int8"] >= 90.0 and exported.agreement["int4"] >= 90.0 and not exported.rejected
    graph = onnx.load(str(exported.variants["int4"] / "model.onnx"), load_external_data=False)
    assert any(n.op_type == "MatMulNBits" for n in graph.graph.node)
    assert "fp16" in exported.skipped and "CUDA" in exported.skipped["fp16"]
    sizes = {d: (exported.variants[d] / "model.onnx").stat().st_size for d in ("fp32", "int8", "int4")}
    assert sizes["int4"] < sizes["int8"] < sizes["fp32"]
    report = Report.load(exported.out_dir / "parity.json")
    assert report.kind == "export-parity" and report.verdict == "pass"
    assert report.metrics["fp32.token_agreement_pct"].head == 100.0
    assert report.metrics["fp32.max_abs_logit_diff"].head < 1e-3
    assert (exported.out_dir / "report.md").read_text().count("export-parity") >= 1
    # parity_n=4, but prompts/answer.yaml has 2 examples (no --prompts-from): one case per prompt.
    assert len(report.cases) == 2 and all(c["passed"] for c in report.cases)


def test_the_served_graph_is_fused_and_computes_logits_for_the_last_position_only(exported):
    """The fp32 graph is optimum's with the serving edits, and the parity gate above passed on it."""
    import numpy as np

    from serving.export import LAST_POSITION_NODE
    from serving.runtime import OrtGenerator

    for dtype in ("fp32", "int8", "int4"):  # the quantised variants are built from the edited graph
        nodes = onnx.load(str(exported.variants[dtype] / "model.onnx"), load_external_data=False).graph.node
        assert {"SkipSimplifiedLayerNormalization", "RotaryEmbedding"} <= {n.op_type for n in nodes}, dtype
        assert any(n.name == LAST_POSITION_NODE for n in nodes), dtype
    graph = Report.load(exported.out_dir / "parity.json").info["graph"]["fp32"]
    assert graph["last_position_logits"] is True and graph["fused"]["RotaryEmbedding"] > 0
    gen = OrtGenerator(exported.variants["fp32"])
    ids = np.array([[5, 6, 7, 8, 9]], dtype=np.int64)
    outputs = gen.session.run(["logits"], {**gen._feeds(ids, np.ones_like(ids), np.arange(5)[None, :], first=True),
                                           **{n: np.zeros((1, gen.kv_heads, 0, gen.head_dim), np.float32)
                                              for n in gen.past_names}})
    assert outputs[0].shape[:2] == (1, 1)  # one row of logits for a five-token prompt


def test_the_serving_edits_keep_a_graph_with_external_weights_whole(micro_model, tmp_path):
    """Models over 2 GB keep their weights in model.onnx_data; the edits rewrite both files and the
    result loads and answers as the same export without them."""
    import shutil as sh

    from serving.export import optimum_export, serving_graph
    from serving.runtime import OrtGenerator, SamplingParams

    plain = tmp_path / "plain"
    optimum_export(micro_model, plain)
    external = tmp_path / "external"
    sh.copytree(plain, external)
    onnx.save(onnx.load(str(plain / "model.onnx")), str(external / "model.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="model.onnx_data", size_threshold=0)
    done = serving_graph(external)
    assert done["last_position_logits"] and done["fused"]
    assert sorted(p.name for p in external.glob("model.onnx*")) == ["model.onnx", "model.onnx_data"]
    params = SamplingParams(max_new_tokens=12)
    prompts = ["def add(a, b):", "Question: what is a list?"]
    want = [c.token_ids for c in OrtGenerator(plain).generate(prompts, params)]
    assert [c.token_ids for c in OrtGenerator(external).generate(prompts, params)] == want


def _run_steps(folder, feeds_per_step):
    """Every output of a prefill and two decode steps of folder/model.onnx on a batch with left padding
    and a masked hole (as the scheduler builds them); the decode steps feed back the model's own cache."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    past = [n for n in inputs if n.startswith("past_key_values.")]
    names = [o.name for o in session.get_outputs()]
    rng = np.random.default_rng(0)
    mask = np.ones((3, 12), dtype=np.int64)
    mask[1, :4] = 0  # left padding
    mask[2, 5:8] = 0  # a hole between a cached prefix and a shorter suffix
    feeds = {"input_ids": rng.integers(3, 200, (3, 12)).astype(np.int64), "attention_mask": mask,
             "position_ids": np.clip(np.cumsum(mask, axis=1) - 1, 0, None)}
    feeds.update({n: np.zeros((3, inputs[n].shape[1], 0, inputs[n].shape[3]), dtype=np.float32) for n in past})
    steps = []
    for _ in range(feeds_per_step):
        outs = session.run(None, feeds)
        steps.append(dict(zip(names, outs, strict=True)))
        mask = np.concatenate([mask, np.ones((3, 1), dtype=np.int64)], axis=1)
        feeds = {"input_ids": rng.integers(3, 200, (3, 1)).astype(np.int64), "attention_mask": mask,
                 "position_ids": mask.sum(axis=1, keepdims=True) - 1,
                 **{n.replace("present.", "past_key_values."): v for n, v in steps[-1].items() if n.startswith("present.")}}
    return steps


def test_graph_edits_keep_the_arithmetic(untied_model, tmp_path):
    """Constant shapes replace traced shape arithmetic, nothing else: prefill and decode give the same
    logits and KV cache bit for bit. Grouped attention drops every `repeat_kv` copy and computes the
    same dot products in other batches: the same outputs up to float rounding, the same next tokens."""
    import shutil as sh

    import numpy as np

    from serving.export import optimum_export, serving_graph
    from serving.graph_edits import GROUPED_PREFIX, STATIC_SHAPE_PREFIX, grouped_attention, static_shapes

    chains, static, grouped, exported = (tmp_path / n for n in ("chains", "static", "grouped", "exported"))
    optimum_export(untied_model, chains)
    sh.copytree(chains, exported)
    serving_graph(chains, static=False)
    sh.copytree(chains, static)
    sh.copytree(chains, grouped)
    model = onnx.load(str(static / "model.onnx"))
    done = static_shapes(model)
    assert done["Reshape"] > 0 and done["Expand"] > 0
    onnx.save(model, str(static / "model.onnx"))
    layers = json.loads((untied_model / "config.json").read_text())["num_hidden_layers"]
    assert grouped_attention(model) == 2 * layers  # keys and values of every layer
    onnx.save(model, str(grouped / "model.onnx"))
    report = serving_graph(exported)  # the export runs both
    assert report["kv_repeats_removed"] == 2 * layers and report["static_shapes"] == done

    before = onnx.load(str(chains / "model.onnx"))
    assert report["nodes"] == len(model.graph.node) < len(before.graph.node)
    constant = {i.name for i in model.graph.initializer}
    in_layers = [n for n in model.graph.node if "/layers." in n.name or n.name.startswith(GROUPED_PREFIX)]
    targets = [n.input[1] for n in in_layers if n.op_type in ("Reshape", "Expand")]
    # every layer's targets are constants, no layer reads a shape at run time or repeats the cache
    assert targets and all(t in constant and t.startswith((STATIC_SHAPE_PREFIX, GROUPED_PREFIX)) for t in targets)
    assert not [n.name for n in in_layers if n.op_type in ("Shape", "Expand")]

    want, same, close = (_run_steps(d, 3) for d in (chains, static, grouped))
    for w, s, c in zip(want, same, close, strict=True):
        assert w.keys() == s.keys() == c.keys()
        for name in w:
            assert np.array_equal(w[name], s[name]), name
            np.testing.assert_allclose(c[name], w[name], rtol=1e-4, atol=1e-4, err_msg=name)
        assert (c["logits"][:, -1].argmax(-1) == w["logits"][:, -1].argmax(-1)).all()


def test_untied_export_passes_parity_on_varied_tokens(untied_export):
    report = Report.load(untied_export.parent / "parity.json")
    assert report.metrics["fp32.token_agreement_pct"].head == 100.0
    outputs = [json.loads(c["output"])["torch"] for c in report.cases]
    assert all(len(set(o)) > 1 for o in outputs)  # not a single repeated token: the gate saw real text


def test_corrupted_model_fails_parity(exported, micro_model, tmp_path):
    from serving.export import parity_check, parity_prompts, serving_prompt, torch_reference

    prompts = parity_prompts(serving_prompt(micro_model), None, 4)
    reference, _ = torch_reference(micro_model, prompts, 16)
    good = parity_check(reference, exported.variants["fp32"], prompts, 16)
    bad = parity_check(reference, corrupt_onnx(exported.variants["fp32"], tmp_path / "bad"), prompts, 16)
    assert good["agreement"] == 100.0 and not good["mismatches"]
    assert bad["agreement"] < 100.0 and bad["mismatches"]


def test_export_gate_fails_and_leaves_nothing(micro_model, tmp_path, monkeypatch):
    import serving.export as export

    real = export.optimum_export

    def export_then_corrupt(model_dir, out, fp16=False):
        real(model_dir, out, fp16=fp16)
        good = out.with_name(out.name + "-good")
        out.rename(good)
        corrupt_onnx(good, out)

    monkeypatch.setattr(export, "optimum_export", export_then_corrupt)
    out = tmp_path / "v2"
    with pytest.raises(GateFailed, match="need 100%"):
        export.export_model(micro_model, out, ["fp32"], parity_n=2, max_new_tokens=16)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v2.parity-failed.json", "v2.parity-failed.md"]
    failed = json.loads((tmp_path / "v2.parity-failed.json").read_text())
    assert failed["verdict"] == "fail" and failed["metrics"]["fp32.token_agreement_pct"]["passed"] is False


def test_export_bad_input(micro_model, tmp_path, exported):
    from serving.export import export_model

    with pytest.raises(InputError, match="no config.json"):
        export_model(tmp_path, tmp_path / "out")
    with pytest.raises(InputError, match="unknown dtype"):
        export_model(micro_model, tmp_path / "out", ["bf16"])
    with pytest.raises(InputError, match="already exists"):
        export_model(micro_model, exported.out_dir)
    assert main(["export", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    bad = tmp_path / "eval.jsonl"
    bad.write_text('{"question": "ok"}\n{"nope": 1}\n')
    assert main(["export", "--model", str(micro_model), "--out", str(tmp_path / "o"),
                 "--prompts-from", str(bad)]) == 2
    assert not (tmp_path / "o").exists()


def test_parity_with_no_prompts_is_refused_not_passed(micro_model: Path, tmp_path: Path) -> None:
    from serving.export import export_model

    with pytest.raises(InputError, match="at least one prompt"):
        export_model(micro_model, tmp_path / "onnx", dtypes=("fp32",), prompts=[])
    assert not (tmp_path / "onnx").exists()  # nothing half written


def test_a_quantised_variant_that_changes_the_answers_is_not_servable(untied_model, tmp_path, monkeypatch):
    """Too coarse a quantisation (2-bit blocks standing in for int4) changes the greedy tokens: the
    variant is measured, moved to rejected/ with its reason, and serving refuses it; fp32 still ships."""
    from serving import export
    from serving.runtime import load_generator

    monkeypatch.setitem(export._NBITS, "int4", 2)
    result = export.export_model(untied_model, tmp_path / "v1", ["fp32", "int4"], parity_n=2, max_new_tokens=16)
    assert result.passed and list(result.variants) == ["fp32"]
    assert result.agreement["int4"] < export.SERVABLE_AGREEMENT_PCT
    assert result.rejected == {"int4": tmp_path / "v1" / "rejected" / "int4"}
    assert not (tmp_path / "v1" / "int4").exists()
    reason = json.loads((result.rejected["int4"] / "reason.json").read_text())
    assert reason["token_agreement_pct"] == result.agreement["int4"] and reason["servable_floor_pct"] == 90.0
    report = Report.load(tmp_path / "v1" / "parity.json")
    check = next(c for c in report.checks if c.name.startswith("int4"))
    assert "not servable" in check.findings[0].message and report.verdict == "pass"
    with pytest.raises(InputError, match="variant int4 is not servable"):
        load_generator(tmp_path / "v1", "onnx", variant="int4")
    assert load_generator(tmp_path / "v1", "onnx", variant="fp32") is not None
