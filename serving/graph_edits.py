"""Edits of an exported decoder graph that keep its arithmetic: serving/export.py's `serving_graph`
runs them on every export, before the parity gate.

    static_shapes(model)       # traced shape arithmetic -> constants; outputs the same bit for bit
    grouped_attention(model)   # grouped-query attention without copying K and V per query head

optimum's export traces `transformers`' Python: every Reshape and Expand gets its target from a
Shape, Gather, Unsqueeze and Concat chain that runs on every step (about 3600 of SmolLM2's 5088
nodes), and grouped-query attention repeats each key and value head for its query heads
(`repeat_kv`: an Expand that copies the whole KV cache, 3x for SmolLM2, on every step of every layer).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper, numpy_helper

STATIC_SHAPE_PREFIX = "llmops_static"
"""Initializers that `static_shapes` writes (a Reshape or Expand shape that used to be computed)."""


def _inferred_shapes(model: Any) -> dict[str, list[int | str | None]]:
    """Every tensor's shape by onnxruntime's symbolic shape inference: ints, the graph's dim names
    (`batch_size`, `past_sequence_length + sequence_length`), or None where it knows nothing."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    # auto_merge: two dims that broadcast together are the same dim (the runtime fails otherwise)
    inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=False)
    shapes: dict[str, list[int | str | None]] = {}
    for info in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]:
        if info.type.tensor_type.HasField("shape"):
            shapes[info.name] = [d.dim_value if d.HasField("dim_value") else d.dim_param if d.HasField("dim_param")
                                 else None for d in info.type.tensor_type.shape.dim]
    return shapes


def _reshape_spec(given: list | None, wanted: list | None) -> list[int] | None:
    """A constant Reshape shape: the int dims, 0 ("keep the input's dim") where the input has the same
    dim at that index, at most one -1; None if the output's shape is not known that well."""
    if given is None or wanted is None or any(d is None or d == 0 for d in wanted):
        return None
    spec = [d if isinstance(d, int) else 0 if k < len(given) and given[k] == d else -1 for k, d in enumerate(wanted)]
    return spec if spec.count(-1) <= 1 else None


def _expand_spec(given: list | None, wanted: list | None) -> list[int] | None:
    """A constant Expand shape (it broadcasts both ways): 1 where a dim stays, the int it grows to."""
    if given is None or wanted is None or len(given) != len(wanted) or None in wanted:
        return None
    spec = [1 if a == b else b if a == 1 and isinstance(b, int) else None for a, b in zip(given, wanted, strict=True)]
    return None if None in spec else spec  # type: ignore[return-value]


def static_shapes(model: Any) -> dict[str, int]:
    """Replace the shape arithmetic the exporter traced (Shape, Gather, Unsqueeze, Concat chains that
    rebuild a Reshape's or Expand's target every step) with constants, where symbolic shape inference
    shows the target is fixed up to the input's own dims; bypass Slices that keep their input whole;
    drop what no output needs. The arithmetic is the same, so the outputs are the same bit for bit."""
    graph = model.graph
    shapes = _inferred_shapes(model)
    constant = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    done = {"Reshape": 0, "Expand": 0, "Slice": 0}
    bypass: dict[str, str] = {}
    for node in graph.node:
        given, wanted = shapes.get(node.input[0]) if node.input else None, shapes.get(node.output[0])
        if node.op_type in ("Reshape", "Expand") and node.input[1] not in constant:
            spec = (_reshape_spec if node.op_type == "Reshape" else _expand_spec)(given, wanted)
            if spec is None or (0 in spec and any(a.name == "allowzero" and a.i for a in node.attribute)):
                continue
            name = f"{STATIC_SHAPE_PREFIX}.{len(constant)}"
            graph.initializer.append(numpy_helper.from_array(np.array(spec, dtype=np.int64), name))
            constant.add(name)
            node.input[1] = name
            done[node.op_type] += 1
        elif (node.op_type == "Slice" and node.output[0] not in outputs and given and given == wanted
              and None not in given):
            bypass[node.output[0]] = node.input[0]
            done["Slice"] += 1
    for node in graph.node:
        for k, name in enumerate(node.input):
            while name in bypass:
                name = bypass[name]
            node.input[k] = name
    drop_dead(graph)
    return done


GROUPED_PREFIX = "llmops_gqa"
"""Names of the Reshapes (and their shape initializers) that `grouped_attention` adds."""


def grouped_attention(model: Any) -> int:
    """Attention of each group of query heads against its one key/value head, without `repeat_kv`.

    The traced pattern, per layer (after `static_shapes`): present (B, kv, T, d) -> Unsqueeze(2) ->
    Expand [1, 1, g, 1, 1] -> Reshape (B, kv*g, T, d), read by the scores (Transpose, scale, MatMul
    with the queries) and by the output (MatMul of the probabilities with it). Query head h = k*g + r
    uses key/value head k, so queries (B, kv*g, S, d) reshaped to (B, kv, g*S, d) meet the unrepeated
    (B, kv, T, d) in one batched MatMul, and the results are reshaped back: the same dot products,
    no copy of the cache. Returns the number of repeats removed (2 a layer); a graph without the
    pattern is left as it is."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    constant = {i.name: i for i in graph.initializer}
    dims = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            for v in [*graph.input, *graph.output]}
    around: dict[str, tuple[Any, Any]] = {}  # a rewritten MatMul's output: the Reshapes before and after it

    def reshape(source: str, spec: list[int], target: str) -> Any:
        name = f"{GROUPED_PREFIX}.{len(graph.initializer)}"
        graph.initializer.append(numpy_helper.from_array(np.array(spec, dtype=np.int64), name))
        return helper.make_node("Reshape", [source, name], [target], name=name)

    def rewrite(expand: Any) -> bool:
        unsqueeze, spec = producer.get(expand.input[0]), constant.get(expand.input[1])
        if unsqueeze is None or unsqueeze.op_type != "Unsqueeze" or spec is None:
            return False
        group, cache = numpy_helper.to_array(spec), unsqueeze.input[0]
        shape = dims.get(cache)  # a present.* output: (batch, kv heads, T, head dim)
        repeat = readers.get(expand.output[0], [])
        if (group.shape != (5,) or list(group[[0, 1, 3, 4]]) != [1, 1, 1, 1] or group[2] <= 1 or not shape
                or len(shape) != 4 or None in shape[1::2] or len(repeat) != 1 or repeat[0].op_type != "Reshape"):
            return False
        kv, head_dim = int(shape[1] or 0), int(shape[3] or 0)  # ints: checked above
        heads = kv * int(group[2])
        repeated = repeat[0].output[0]
        uses = readers.get(repeated, [])
        plan = []
        for use in uses:
            if use.op_type == "Transpose":  # keys: Transpose(0, 1, 3, 2) -> Mul(scale) -> MatMul(queries, .)
                scale = readers.get(use.output[0], [])
                matmul = readers.get(scale[0].output[0], []) if len(scale) == 1 and scale[0].op_type == "Mul" else []
                if len(matmul) != 1 or matmul[0].op_type != "MatMul" or matmul[0].input[1] != scale[0].output[0]:
                    return False
                plan.append(("keys", use, matmul[0]))
            elif use.op_type == "MatMul" and list(use.input).index(repeated) == 1:  # values: MatMul(probs, .)
                plan.append(("values", use, use))
            else:
                return False
        if not plan:
            return False
        for kind, use, matmul in plan:
            tag = f"{GROUPED_PREFIX}.{matmul.name or id(matmul)}"
            out = matmul.output[0]
            if kind == "keys":
                use.input[0] = cache
                first = reshape(matmul.input[0], [0, kv, -1, head_dim], f"{tag}.queries")
                matmul.input[0], matmul.output[0] = f"{tag}.queries", f"{tag}.scores"
                around[f"{tag}.scores"] = (first, reshape(f"{tag}.scores", [0, heads, -1, 0], out))
            else:
                first = reshape(matmul.input[0], [0, kv, -1, 0], f"{tag}.probs")
                matmul.input[0], matmul.input[1], matmul.output[0] = f"{tag}.probs", cache, f"{tag}.out"
                around[f"{tag}.out"] = (first, reshape(f"{tag}.out", [0, heads, -1, head_dim], out))
        return True

    removed = sum(rewrite(node) for node in [n for n in graph.node if n.op_type == "Expand"])
    if removed:
        ordered = [new for node in graph.node
                   for new in ((around[node.output[0]][0], node, around[node.output[0]][1])
                               if node.output[0] in around else (node,))]
        del graph.node[:]
        graph.node.extend(ordered)
        drop_dead(graph)
    return removed


def drop_dead(graph: Any) -> None:
    """Remove the nodes no graph output depends on, and the initializers no node reads."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        live = [node for node in graph.node if any(o in read for o in node.output)]
        if len(live) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(live)
    read = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
