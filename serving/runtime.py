"""Text generation on ONNX Runtime with the project's own KV-cache loop, plus torch and optimum backends.

    python -c "from serving.runtime import load_generator, SamplingParams; \
g = load_generator('exports/v1/fp32'); print(g.generate(['def f():'], SamplingParams(max_new_tokens=16))[0].text)"

Every backend shares one decode loop (`Generator`): left-padded batches, greedy or sampled
(temperature, top_p, seed) decoding, max_new_tokens, stop strings, eos, and streaming of text
deltas. A backend only supplies two model calls, `_prefill` (the whole prompt, empty past) and
`_decode` (one token per row, reusing the cache), each returning the last position's logits.

- `OrtGenerator`: a raw `onnxruntime.InferenceSession` over an optimum `text-generation-with-past`
  export. It feeds `past_key_values.*` (empty, (batch, kv_heads, 0, head_dim), on the first step)
  and feeds each step's `present.*` back in. This is the serving runtime.
- `TorchGenerator`: the merged Hugging Face model in torch eager, the parity and speed baseline.
- `OptimumGenerator` and `hf_generate` (serving/hf_baseline.py): the Hugging Face baselines, for the bench and parity.

The loop here decodes one batch under `Generator.lock`, all rows with one SamplingParams. The HTTP
server batches across requests instead (serving/batching.py): it drives `_prefill`/`_decode`
itself and needs three cache operations per backend (`_cache_select`, `_cache_trim`,
`_cache_merge`) to drop finished rows and merge newly prefilled ones into the running batch.
"""

from __future__ import annotations

import abc
import json
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmops.errors import InputError
from llmops.settings import Settings
from serving.sampling import SamplingParams, adjust, choose

__all__ = ["SamplingParams"]  # re-exported: callers import it from here

REPLACEMENT_CHAR = "\ufffd"  # what a byte-level BPE decode shows for an incomplete UTF-8 sequence


@dataclass
class Completion:
    text: str
    """Generated text, without special tokens, cut before the first stop string."""
    token_ids: list[int]
    """Every generated token id, eos included when it was generated."""
    prompt_tokens: int
    finish_reason: str
    """"stop" (eos or a stop string) or "length" (max_new_tokens or the context window)."""

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class StreamChunk:
    text: str
    """New text since the previous chunk (may be empty)."""
    completion: Completion | None = None
    """Set on the last chunk only."""


@dataclass
class _Row:
    """Decoding state of one sequence of a batch."""

    prompt_tokens: int
    budget: int  # tokens this row may still generate: min(max_new_tokens, context left)
    rng: np.random.Generator
    ids: list[int] = field(default_factory=list)
    text: str = ""
    text_ids: int = 0  # how many of `ids` `text` was decoded from
    finish_reason: str | None = None
    emitted: str = ""  # text already streamed


class Generator(abc.ABC):
    """The shared decode loop. Subclasses implement `_prefill` and `_decode`."""

    backend = "abstract"

    def __init__(self, model_dir: Path, tokenizer: Any, max_positions: int | None) -> None:
        self.model_dir = Path(model_dir)
        self.tokenizer = tokenizer
        self.max_positions = max_positions
        eos = tokenizer.eos_token_id
        self.eos_ids: set[int] = set() if eos is None else {int(eos)}
        gen_cfg = self.model_dir / "generation_config.json"
        if gen_cfg.is_file():
            import json

            cfg_eos = json.loads(gen_cfg.read_text()).get("eos_token_id")
            self.eos_ids |= set(cfg_eos if isinstance(cfg_eos, list) else [cfg_eos] if cfg_eos is not None else [])
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (min(self.eos_ids) if self.eos_ids else 0))
        # One generation at a time per generator: sessions and torch modules are shared state.
        self.lock = threading.Lock()

    # ---- backend hooks -------------------------------------------------------------------------
    @abc.abstractmethod
    def _prefill(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                 position_ids: np.ndarray) -> tuple[np.ndarray, Any]:
        """(batch, seq) int64 each -> last-position logits (batch, vocab) float32 and the cache."""

    @abc.abstractmethod
    def _decode(self, cache: Any, next_ids: np.ndarray, attention_mask: np.ndarray,
                position_ids: np.ndarray) -> tuple[np.ndarray, Any]:
        """next_ids, position_ids (batch, 1); attention_mask (batch, past + 1)."""

    # Cache operations of continuous batching (serving/batching.py). A cache's rows follow the
    # batch's rows; its past axis is left-padded, like the attention mask that masks the padding.
    @abc.abstractmethod
    def _cache_repeat(self, cache: Any, rows: int) -> Any:
        """A new cache of `rows` copies of a one-row cache, the argument left as it was (the scheduler's
        prefix cache: `_decode` then runs a chunk of several tokens after it)."""

    @abc.abstractmethod
    def _cache_select(self, cache: Any, rows: Sequence[int]) -> Any:
        """The cache of `rows` only (finished or cancelled rows leave the batch)."""

    @abc.abstractmethod
    def _cache_trim(self, cache: Any, drop: int) -> Any:
        """The cache without its first `drop` past positions (padding in every remaining row)."""

    @abc.abstractmethod
    def _cache_merge(self, first: Any, second: Any) -> Any:
        """`first`'s rows then `second`'s, the shorter past left-padded with zeros to the longer."""

    # ---- public API ----------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        # No clean-up of spaces: it rewrites earlier text, which would break streaming deltas.
        return self.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Completion]:
        """Generate for a batch of raw prompt texts (left-padded into one batch)."""
        return self.generate_ids([self.encode(p) for p in prompts], params)

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        rows: list[_Row] = []
        for step_rows in self._loop(prompt_ids, params, live_text=False):
            rows = step_rows  # the same list every step; the last yield has every row finished
        return [self._completion(r) for r in rows]

    def stream(self, prompt: str, params: SamplingParams) -> Iterator[StreamChunk]:
        """Yield text deltas of one prompt; the last chunk carries the Completion.

        A delta never ends inside a UTF-8 character (byte-level BPE can split one over tokens)
        nor inside what may become a stop string, so the deltas concatenate to `Completion.text`.
        """
        return self.stream_ids(self.encode(prompt), params)

    def stream_ids(self, prompt_ids: Sequence[int], params: SamplingParams) -> Iterator[StreamChunk]:
        """`stream` for an already encoded prompt."""
        row: _Row | None = None
        for (row,) in self._loop([prompt_ids], params, live_text=True):
            if row.finish_reason is None:
                safe = self._stream_safe(row.text, params.stop)
                if len(safe) > len(row.emitted) and safe.startswith(row.emitted):
                    delta, row.emitted = safe[len(row.emitted):], safe
                    yield StreamChunk(delta)
        assert row is not None
        done = self._completion(row)
        tail = done.text[len(row.emitted):] if done.text.startswith(row.emitted) else ""
        yield StreamChunk(tail, completion=done)

    # ---- the loop ------------------------------------------------------------------------------
    @staticmethod
    def _stream_safe(text: str, stops: tuple[str, ...]) -> str:
        """The part of unfinished text that can no longer change: hold back a partial character
        and any suffix that is a prefix of a stop string."""
        text = text.rstrip(REPLACEMENT_CHAR)
        hold = 0
        for stop in stops:
            for k in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:k]):
                    hold = max(hold, k)
                    break
        return text[: len(text) - hold]

    def _completion(self, row: _Row) -> Completion:
        if row.text_ids != len(row.ids):  # text is decoded lazily when no stop string needs it
            row.text, row.text_ids = self.decode(row.ids), len(row.ids)
        return Completion(text=row.text, token_ids=list(row.ids), prompt_tokens=row.prompt_tokens,
                          finish_reason=row.finish_reason or "length")

    def _loop(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams,
              live_text: bool) -> Iterator[list[_Row]]:
        """Run prefill then decode steps; yield the rows after every step until all are finished.

        `row.text` is kept current every step only when `live_text` (streaming) or stop strings
        need it; decoding every row every step is the loop's main Python cost otherwise.
        """
        live_text = live_text or bool(params.stop)
        if not prompt_ids:
            return
        lengths = [len(p) for p in prompt_ids]
        if min(lengths) == 0:
            raise InputError("empty prompt: it encodes to no tokens", field="prompt")
        longest = max(lengths)
        if self.max_positions is not None and longest >= self.max_positions:
            raise InputError(f"prompt has {longest} tokens; the model's context window is {self.max_positions}",
                             field="prompt")
        batch = len(prompt_ids)
        rows = []
        for i, n in enumerate(lengths):
            room = params.max_new_tokens if self.max_positions is None else min(
                params.max_new_tokens, self.max_positions - longest)
            seed = None if params.seed is None else params.seed + i
            rows.append(_Row(prompt_tokens=n, budget=room, rng=np.random.default_rng(seed)))
        # Left padding: every row's last prompt token sits at the same column, so one (batch, 1)
        # step serves all rows.
        input_ids = np.full((batch, longest), self.pad_id, dtype=np.int64)
        attention = np.zeros((batch, longest), dtype=np.int64)
        for i, ids in enumerate(prompt_ids):
            input_ids[i, longest - len(ids):] = ids
            attention[i, longest - len(ids):] = 1
        # Positions count real tokens only, so a padded row sees the same positions as unpadded.
        positions = np.clip(np.cumsum(attention, axis=1) - 1, 0, None)
        with self.lock:
            logits, cache = self._prefill(input_ids, attention, positions)
            next_pos = positions[:, -1:] + 1  # (batch, 1)
            while True:
                next_ids = np.full((batch, 1), self.pad_id, dtype=np.int64)
                if params.penalised:
                    logits = self._penalise(logits, rows, params)
                greedy = logits.argmax(axis=-1) if params.temperature <= 0.0 else None  # (batch,)
                for i, row in enumerate(rows):
                    if row.finish_reason is not None:
                        continue
                    token = int(greedy[i]) if greedy is not None else choose(logits[i], params, row.rng)
                    next_ids[i, 0] = token
                    self._advance(row, token, params, live_text)
                yield rows
                if all(r.finish_reason is not None for r in rows):
                    return
                attention = np.concatenate([attention, np.ones((batch, 1), dtype=np.int64)], axis=1)
                logits, cache = self._decode(cache, next_ids, attention, next_pos)
                next_pos = next_pos + 1

    def _advance(self, row: _Row, token: int, params: SamplingParams, live_text: bool) -> None:
        row.ids.append(token)
        if token in self.eos_ids and not params.ignore_eos:
            row.finish_reason = "stop"
            return
        if live_text:
            row.text, row.text_ids = self.decode(row.ids), len(row.ids)
        if params.stop:
            cut = min((i for i in (row.text.find(s) for s in params.stop) if i >= 0), default=-1)
            if cut >= 0:
                row.text = row.text[:cut]
                row.text_ids = len(row.ids)  # the cut text is final
                row.finish_reason = "stop"
                return
        if len(row.ids) >= row.budget:
            row.finish_reason = "length"

    @staticmethod
    def _penalise(logits: np.ndarray, rows: list[_Row], params: SamplingParams) -> np.ndarray:
        """Each unfinished row's logits adjusted by serving.sampling.adjust."""
        logits = np.array(logits, dtype=np.float32)  # a copy: a runtime may reuse its output buffer
        for i, row in enumerate(rows):
            if row.finish_reason is None:
                adjust(logits[i], row.ids, params)
        return logits


# ---- ONNX Runtime ------------------------------------------------------------------------------
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def find_onnx_dir(model_dir: Path, variant: str | None = None) -> Path:
    """The folder holding model.onnx: `model_dir` itself, or `model_dir/<variant>` of an export
    (fp32 when no variant is named)."""
    model_dir = Path(model_dir)
    if variant is None and (model_dir / "model.onnx").is_file():
        return model_dir
    sub = model_dir / (variant or "fp32")
    if (sub / "model.onnx").is_file():
        return sub
    reason = model_dir / "rejected" / (variant or "fp32") / "reason.json"
    if reason.is_file():  # serving/export.py moved it there: under the agreement floor
        why = json.loads(reason.read_text(encoding="utf-8"))
        raise InputError(f"variant {variant} is not servable: {why['token_agreement_pct']:.1f}% of greedy tokens "
                         f"agree with torch, under the {why['servable_floor_pct']:.0f}% floor (see parity.json)",
                         file=str(reason))
    raise InputError(f"no model.onnx in {model_dir}" + (f" or {sub}" if sub != model_dir else "")
                     + "; run `llmops export --model MERGED_MODEL --out DIR` first", file=str(model_dir))


def _max_positions(config_dir: Path) -> int | None:

    cfg_path = Path(config_dir) / "config.json"
    if not cfg_path.is_file():
        return None
    cfg = json.loads(cfg_path.read_text())
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if isinstance(cfg.get(key), int):
            return cfg[key]
    return None


def _load_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load a tokenizer: {exc}", file=str(model_dir)) from None


class OrtGenerator(Generator):
    """The serving runtime: a raw ORT session and the shared KV-cache loop."""

    backend = "onnx"

    def __init__(self, model_dir: Path, *, threads: int | None = None, providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        onnx_dir = find_onnx_dir(model_dir)
        super().__init__(onnx_dir, _load_tokenizer(onnx_dir), _max_positions(onnx_dir))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or Settings.load().ort_threads or (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if providers is None:
            available = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self.session = ort.InferenceSession(str(onnx_dir / "model.onnx"), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise InputError(f"onnxruntime cannot load the model: {exc}", file=str(onnx_dir / "model.onnx")) from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.input_names = set(inputs)
        self.past_names = sorted((n for n in inputs if n.startswith("past_key_values.")), key=_layer_order)
        if "input_ids" not in inputs or not self.past_names:
            raise InputError("model.onnx is not a text-generation-with-past export (needs input_ids and "
                             "past_key_values.* inputs)", file=str(onnx_dir / "model.onnx"))
        first = inputs[self.past_names[0]]
        # past shape (batch, kv_heads, past_seq, head_dim); kv_heads and head_dim are fixed ints.
        self.kv_heads, self.head_dim = int(first.shape[1]), int(first.shape[3])
        self.kv_dtype = _ORT_TYPES.get(first.type, np.float32)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.present_to_past = {n: n.replace("present.", "past_key_values.", 1)
                                for n in self.output_names if n.startswith("present.")}

    def _run(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        outputs = self.session.run(None, feeds)
        cache: dict[str, np.ndarray] = {}
        logits = None
        for name, value in zip(self.output_names, outputs, strict=True):
            if name == "logits":
                logits = value
            elif name in self.present_to_past:
                cache[self.present_to_past[name]] = value
        assert logits is not None
        return np.asarray(logits[:, -1, :], dtype=np.float32), cache  # (batch, vocab)

    def _feeds(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
               first: bool) -> dict[str, np.ndarray]:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "position_ids" in self.input_names:
            feeds["position_ids"] = position_ids
        if "use_cache_branch" in self.input_names:  # older merged decoders switch branches on it
            feeds["use_cache_branch"] = np.array([not first])
        return feeds

    def _prefill(self, input_ids, attention_mask, position_ids):
        feeds = self._feeds(input_ids, attention_mask, position_ids, first=True)
        empty = np.zeros((input_ids.shape[0], self.kv_heads, 0, self.head_dim), dtype=self.kv_dtype)
        for name in self.past_names:
            feeds[name] = empty
        return self._run(feeds)

    def _decode(self, cache, next_ids, attention_mask, position_ids):
        feeds = self._feeds(next_ids, attention_mask, position_ids, first=False)
        feeds.update(cache)
        return self._run(feeds)

    # past_key_values.N.key/value: numpy (batch, kv_heads, past, head_dim)
    def _cache_repeat(self, cache, rows):
        return {name: np.repeat(value, rows, axis=0) for name, value in cache.items()}

    def _cache_select(self, cache, rows):
        index = np.asarray(list(rows), dtype=np.int64)
        return {name: value[index] for name, value in cache.items()}  # fancy indexing copies: contiguous

    def _cache_trim(self, cache, drop):
        return {name: np.ascontiguousarray(value[:, :, drop:, :]) for name, value in cache.items()}

    def _cache_merge(self, first, second):
        past = max(_past_len(first), _past_len(second))
        return {name: np.concatenate([_left_pad(first[name], past), _left_pad(second[name], past)], axis=0)
                for name in first}


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two sequences share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _past_len(cache: dict[str, np.ndarray]) -> int:
    return int(next(iter(cache.values())).shape[2])


def _left_pad(value: np.ndarray, past: int) -> np.ndarray:
    """(batch, heads, n, dim) -> (batch, heads, past, dim) with zeros in front (masked out)."""
    missing = past - value.shape[2]
    if missing <= 0:
        return value
    zeros = np.zeros((value.shape[0], value.shape[1], missing, value.shape[3]), dtype=value.dtype)
    return np.concatenate([zeros, value], axis=2)


def _layer_order(name: str) -> tuple[int, str]:
    parts = name.split(".")  # past_key_values.<layer>.<key|value>
    return (int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0, name)


# ---- torch -------------------------------------------------------------------------------------
class TorchGenerator(Generator):
    """The merged Hugging Face model in torch eager, through the same loop: the parity baseline."""

    backend = "torch"

    def __init__(self, model_dir: Path, *, threads: int | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise InputError("not a Hugging Face model folder (no config.json)", file=str(model_dir))
        if threads:
            torch.set_num_threads(threads)
        super().__init__(model_dir, _load_tokenizer(model_dir), _max_positions(model_dir))
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()

    def _forward(self, input_ids, attention_mask, position_ids, cache):
        torch = self.torch
        with torch.inference_mode():
            out = self.model(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask),
                             position_ids=torch.from_numpy(position_ids), past_key_values=cache, use_cache=True)
        return out.logits[:, -1, :].float().numpy(), out.past_key_values

    def _prefill(self, input_ids, attention_mask, position_ids):
        from transformers import DynamicCache

        return self._forward(input_ids, attention_mask, position_ids, DynamicCache())

    def _decode(self, cache, next_ids, attention_mask, position_ids):
        return self._forward(next_ids, attention_mask, position_ids, cache)

    # transformers' DynamicCache: one layer per decoder layer, keys/values (batch, kv_heads, past, head_dim).
    # The layers are edited in place; a sliding-window layer would need its own rules, so it is refused.
    def _layers(self, cache: Any) -> list[Any]:
        from transformers.cache_utils import DynamicLayer

        layers = list(cache.layers)
        if any(type(layer) is not DynamicLayer for layer in layers):
            kinds = sorted({type(layer).__name__ for layer in layers} - {"DynamicLayer"})
            raise InputError(f"batching across requests needs full-attention cache layers; this model has "
                             f"{', '.join(kinds)}", file=str(self.model_dir))
        return layers

    def _cache_select(self, cache, rows):
        torch = self.torch
        index = torch.tensor(list(rows), dtype=torch.long)
        with torch.inference_mode():
            for layer in self._layers(cache):
                layer.keys, layer.values = layer.keys[index], layer.values[index]
        return cache

    def _cache_repeat(self, cache, rows):
        from transformers import DynamicCache

        fresh = DynamicCache()
        with self.torch.inference_mode():
            for i, layer in enumerate(self._layers(cache)):
                fresh.update(layer.keys.repeat(rows, 1, 1, 1), layer.values.repeat(rows, 1, 1, 1), i)
        return fresh

    def _cache_trim(self, cache, drop):
        with self.torch.inference_mode():
            for layer in self._layers(cache):
                layer.keys, layer.values = layer.keys[:, :, drop:, :], layer.values[:, :, drop:, :]
        return cache

    def _cache_merge(self, first, second):
        torch = self.torch

        def pad(value: Any, past: int) -> Any:
            missing = past - value.shape[2]
            if missing <= 0:
                return value
            zeros = value.new_zeros((value.shape[0], value.shape[1], missing, value.shape[3]))
            return torch.cat([zeros, value], dim=2)

        with torch.inference_mode():
            for mine, theirs in zip(self._layers(first), self._layers(second), strict=True):
                past = max(mine.keys.shape[2], theirs.keys.shape[2])
                mine.keys = torch.cat([pad(mine.keys, past), pad(theirs.keys, past)], dim=0)
                mine.values = torch.cat([pad(mine.values, past), pad(theirs.values, past)], dim=0)
        return first


def load_generator(model_dir: str | Path, backend: str = "onnx", *, threads: int | None = None,
                   variant: str | None = None) -> Generator:
    """The generator for `backend` ("onnx" or "torch") over `model_dir`.

    onnx: `model_dir` holds model.onnx, or is an export root (then `variant`, default fp32).
    torch: `model_dir` is a Hugging Face model folder.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise InputError("model folder not found", file=str(model_dir))
    if backend == "onnx":
        return OrtGenerator(find_onnx_dir(model_dir, variant), threads=threads)
    if backend == "torch":
        return TorchGenerator(model_dir, threads=threads)
    raise InputError(f"unknown backend {backend!r} (onnx or torch)", field="backend")
