"""The licence allowlist for datasets and base models (governance/licenses.yaml).

    python -c "from governance.licenses import check_dataset_license; print(check_dataset_license('datasets/python-faq'))"

`check_license(spdx, kind, where)` returns an llmops.report.Finding naming the file and field when
the licence is not allowed, else None; the data gate and training call it. SPDX expressions are
evaluated as SPDX defines them: `A OR B` passes when either passes, `A AND B` when both do, AND
binds tighter than OR, parentheses group, and `A WITH exception` is judged by A (exceptions only
grant more). The denylist wins over the allowlist; anything on neither is refused, so a new
licence needs a reviewed change to licenses.yaml.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmops.config_files import load_validated_yaml
from llmops.dataset import CARD_FILE, load_card
from llmops.errors import InputError
from llmops.report import Finding
from llmops.settings import Settings

KINDS = ("dataset", "model")
DEFAULT_LICENSES = Path(__file__).with_name("licenses.yaml")
_TOKEN = re.compile(r"\(|\)|[A-Za-z0-9][A-Za-z0-9.+:-]*")


class AllowLists(BaseModel):
    model_config = ConfigDict(extra="forbid")

    common: list[str] = Field(default_factory=list)
    """SPDX ids allowed for datasets and base models."""
    dataset: list[str] = Field(default_factory=list)
    """Extra ids allowed for datasets only."""
    model: list[str] = Field(default_factory=list)
    """Extra ids allowed for base models only."""


class LicensePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_: int = Field(1, alias="schema")
    allow: AllowLists
    deny: dict[str, str] = Field(default_factory=dict)
    """Pattern (fnmatch, case-insensitive) -> why it is refused."""

    @field_validator("schema_")
    @classmethod
    def _schema(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"unsupported schema {value}; this code reads schema 1")
        return value

    def judge_id(self, spdx_id: str, kind: str) -> str | None:
        """None when one licence id is allowed for `kind`, else why not."""
        low = spdx_id.lower()
        for pattern, reason in self.deny.items():
            if fnmatch.fnmatchcase(low, pattern.lower()):
                return f"{spdx_id} is denied ({reason})"
        allowed = {x.lower() for x in (*self.allow.common, *getattr(self.allow, kind))}
        if low in allowed:
            return None
        return f"{spdx_id} is not on the {kind} allowlist"

    def judge(self, expression: str, kind: str) -> str | None:
        """None when an SPDX expression is allowed for `kind`, else why not."""
        if kind not in KINDS:
            raise InputError(f"unknown licence kind {kind!r}; known: {', '.join(KINDS)}", field="kind")
        tokens = _TOKEN.findall(expression)
        if not tokens or "".join(tokens) != re.sub(r"\s+", "", expression):
            return f"{expression!r} is not an SPDX licence expression"
        try:
            reasons, pos = self._or(tokens, 0, kind)
        except IndexError:
            pos = -1
        if pos != len(tokens):
            return f"{expression!r} is not an SPDX licence expression"
        return "; ".join(reasons) if reasons else None

    # Recursive descent over the tokens; each returns (reasons it fails, next position).
    def _or(self, tokens: list[str], pos: int, kind: str) -> tuple[list[str], int]:
        reasons, pos = self._and(tokens, pos, kind)
        all_reasons = list(reasons)
        ok = not reasons
        while pos < len(tokens) and tokens[pos].upper() == "OR":
            reasons, pos = self._and(tokens, pos + 1, kind)
            ok = ok or not reasons
            all_reasons += reasons
        return ([] if ok else all_reasons), pos

    def _and(self, tokens: list[str], pos: int, kind: str) -> tuple[list[str], int]:
        reasons, pos = self._atom(tokens, pos, kind)
        while pos < len(tokens) and tokens[pos].upper() == "AND":
            more, pos = self._atom(tokens, pos + 1, kind)
            reasons += more
        return reasons, pos

    def _atom(self, tokens: list[str], pos: int, kind: str) -> tuple[list[str], int]:
        token = tokens[pos]
        if token == "(":
            reasons, pos = self._or(tokens, pos + 1, kind)
            if tokens[pos] != ")":
                raise IndexError("unbalanced parenthesis")
            return reasons, pos + 1
        if token == ")" or token.upper() in ("AND", "OR", "WITH"):
            raise IndexError(f"unexpected {token!r}")
        pos += 1
        if pos < len(tokens) and tokens[pos].upper() == "WITH":
            pos += 2  # the exception id; it only grants more, so the licence decides
            if pos > len(tokens):
                raise IndexError("WITH needs an exception id")
        reason = self.judge_id(token, kind)
        return ([reason] if reason else []), pos


def load_license_policy(path: Path | None = None, *, settings: Settings | None = None) -> LicensePolicy:
    """The repo's governance/licenses.yaml (else the packaged copy), validated."""
    if path is None:
        in_repo = (settings or Settings.load()).root / "governance" / "licenses.yaml"
        path = in_repo if in_repo.is_file() else DEFAULT_LICENSES
    return load_validated_yaml(Path(path), LicensePolicy)


def check_license(spdx: str | None, kind: str, where: str, *, field: str = "license", line: int | None = None,
                  policy: LicensePolicy | None = None) -> Finding | None:
    """A Finding at `where` (a file) [field] when `spdx` is missing or not allowed for `kind`, else None."""
    policy = policy or load_license_policy()
    if not spdx or not str(spdx).strip():
        return Finding(message=f"no licence declared for this {kind}", file=where, line=line, field=field)
    reason = policy.judge(str(spdx).strip(), kind)
    if reason is None:
        return None
    return Finding(message=f"licence {spdx!r} not allowed for a {kind}: {reason} "
                           "(see governance/licenses.yaml)", file=where, line=line, field=field)


def _front_matter_line(path: Path, key: str) -> int | None:
    """1-based line of `key:` in a card's YAML front matter, for the finding."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for i, text in enumerate(lines[1:], start=2):
        if text.strip() == "---":
            break
        if re.match(rf"^{re.escape(key)}\s*:", text):
            return i
    return None


def check_dataset_license(dataset_dir: Path | str, *, policy: LicensePolicy | None = None) -> list[Finding]:
    """Findings for the dataset card's `license` (README.md front matter); [] when allowed.
    A missing or broken card is an InputError from load_card (exit 2)."""
    card = load_card(dataset_dir)
    path = Path(dataset_dir) / CARD_FILE
    finding = check_license(card.license, "dataset", str(path), line=_front_matter_line(path, "license"),
                            policy=policy)
    return [finding] if finding else []


def model_card_license(model_dir: Path | str) -> str | None:
    """The `license` of a Hugging Face model card (MODEL_DIR/README.md front matter); None when the card or
    the field is missing. Front matter that is not YAML is an InputError naming the card."""
    import yaml

    path = Path(model_dir) / "README.md"
    if not path.is_file():
        return None
    match = re.match(r"^---\s*\n(.*?)\n---\s*(?:\n|$)", path.read_text(encoding="utf-8"), re.DOTALL)
    try:
        meta = yaml.safe_load(match.group(1)) if match else None
    except yaml.YAMLError as exc:
        raise InputError(f"model card front matter is not valid YAML: {exc}", file=str(path)) from exc
    spdx = meta.get("license") if isinstance(meta, dict) else None
    return spdx if isinstance(spdx, str) and spdx.strip() else None


def check_model_license(model_dir: Path | str, *, policy: LicensePolicy | None = None) -> list[Finding]:
    """Findings for a base model's Hugging Face card (README.md front matter `license`)."""
    path = Path(model_dir) / "README.md"
    if not path.is_file():
        return [Finding(message="model card README.md missing: no licence declared", file=str(path),
                        field="license")]
    finding = check_license(model_card_license(model_dir), "model", str(path),
                            line=_front_matter_line(path, "license"), policy=policy)
    return [finding] if finding else []
