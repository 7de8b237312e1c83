"""How the decode loop picks each token: the request's SamplingParams, the logit adjustments
(OpenAI's frequency and presence penalties, banned openings) and greedy or nucleus sampling.

Shared by the one-batch loop (serving/runtime.py `Generator`) and the cross-request scheduler
(serving/batching.py), so both choose exactly the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmops.errors import InputError


@dataclass(frozen=True)
class SamplingParams:
    """How to decode one request (or one batch)."""

    max_new_tokens: int = 64
    """Most tokens to generate; fewer when the context window runs out."""
    temperature: float = 0.0
    """0 means greedy (argmax); otherwise logits are divided by it before sampling."""
    top_p: float = 1.0
    """Nucleus sampling: sample from the smallest set of tokens whose probability reaches top_p."""
    seed: int | None = None
    """Seed of the sampler, so a sampled request can be replayed."""
    stop: tuple[str, ...] = ()
    """Generation ends at the first of these strings; the returned text excludes it."""
    ignore_eos: bool = False
    """Keep generating after eos (benchmarks that need a fixed length)."""
    frequency_penalty: float = 0.0
    """OpenAI's: subtracted from a token's logit once per time the token was already generated."""
    presence_penalty: float = 0.0
    """OpenAI's: subtracted once from the logit of every token already generated."""
    first_token_bans: tuple[int, ...] = ()
    """Token ids the answer may not open with (serving/guards.py: the refusal's, for a question the
    scope head finds about Python and the detector finds no attack in)."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise InputError("max_new_tokens must be >= 1", field="max_new_tokens")
        if not 0.0 <= self.temperature <= 2.0:
            raise InputError("temperature must be in [0, 2]", field="temperature")
        if not 0.0 < self.top_p <= 1.0:
            raise InputError("top_p must be in (0, 1]", field="top_p")
        for name in ("frequency_penalty", "presence_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                raise InputError(f"{name} must be in [-2, 2]", field=name)
        object.__setattr__(self, "stop", tuple(s for s in self.stop if s))

    @property
    def penalised(self) -> bool:
        """Whether the logits are adjusted before choosing (penalties, or a first-token ban)."""
        return self.frequency_penalty != 0.0 or self.presence_penalty != 0.0 or bool(self.first_token_bans)


def adjust(scores: np.ndarray, generated: list[int], params: SamplingParams) -> None:
    """One row's logits (vocab,), in place: OpenAI's penalties over its generated tokens (the
    prompt's do not count), logit[t] -= count[t] * frequency_penalty + (count[t] > 0) *
    presence_penalty; and before the first token, the banned openings at -inf."""
    if generated and (params.frequency_penalty or params.presence_penalty):
        tokens, counts = np.unique(np.asarray(generated), return_counts=True)
        scores[tokens] -= (counts * params.frequency_penalty + params.presence_penalty).astype(np.float32)
    if not generated and params.first_token_bans:
        scores[list(params.first_token_bans)] = -np.inf

def choose(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    """Next token from last-position logits (vocab,)."""
    if params.temperature <= 0.0:
        return int(np.argmax(logits))
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        scaled = logits.astype(np.float64) / params.temperature
    if not np.isfinite(scaled).all():
        # a temperature so close to 0 that the logits overflow: the limit is greedy (found by
        # the schemathesis fuzz run: temperature 5e-324 made the probabilities NaN, a 500)
        return int(np.argmax(logits))
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if params.top_p < 1.0:
        order = np.argsort(-probs)
        cumulative = np.cumsum(probs[order])
        # Keep tokens up to and including the one that crosses top_p.
        keep = order[: int(np.searchsorted(cumulative, params.top_p)) + 1]
        mask = np.zeros_like(probs)
        mask[keep] = probs[keep]
        probs = mask / mask.sum()
    return int(rng.choice(len(probs), p=probs))
