"""A result cache for eval cases and dataset rows, keyed by what decides the result.

The key (see `evals.rule_evals.cache_key`) hashes the rendered prompt, the case, the model version,
the generation params and the assertion versions, so any change to one of them is a miss and an
unchanged re-run of `llmops gate pr` needs no model call at all. Entries are JSON files written
atomically under `<home>/cache/eval/<key[:2]>/<key>.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmops.files import atomic_write_json


class ResultCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        atomic_write_json(self._path(key), value)
