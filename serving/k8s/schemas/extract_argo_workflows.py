"""Re-create the vendored Argo Workflows schema from the PyPI package it comes from.

    .venv/bin/pip download --no-deps hera==7.1.0 -d /tmp/hera
    .venv/bin/python serving/k8s/schemas/extract_argo_workflows.py /tmp/hera/hera-7.1.0-py3-none-any.whl

The Argo project publishes the JSON schema of its kinds (api/jsonschema/schema.json) only in its
repository. Of the registries this project can reach, npm's `@kubernetes-models/argo-workflows` (2.0.0,
the only version served) ships compiled validators rather than the schema, and the `argo-workflows` SDK
ships none. `hera` (Apache-2.0) generates its pydantic models of the Argo kinds from that schema with
datamodel-codegen (hera 7.1.0 from Argo Workflows v4.0.5's schema; the module's header names the file),
and pydantic's `model_json_schema()` writes them back out as a JSON schema. This script checks the
wheel's sha256, imports the models straight from the wheel (nothing is installed), writes the `Workflow`
schema and hera's LICENSE next to SOURCE.json, which records every sha256 and the pydantic version that
wrote the schema. Nothing in the schema is written by hand; serving/k8s_validate.py applies the API
server's strict field validation on load, as it does to the Argo Rollouts schemas.
"""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent / "argo-workflows"
PACKAGE, VERSION = "hera", "7.1.0"
WHEEL_SHA256 = "1957348f770c06aec1b8f8c10c83b62fc03ec51df3c65208dcff672ff5ed145c"
MODULE = "hera/workflows/models/io/argoproj/workflow/v1alpha1.py"
KINDS = {"Workflow": "workflow.json"}

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_argo_rollouts import cli, schema_bytes, sha256, write_source  # noqa: E402  (same folder, a script)


def main(wheel: str) -> int:
    data = Path(wheel).read_bytes()
    if sha256(data) != WHEEL_SHA256:
        print(f"error: {wheel} is not {PACKAGE}=={VERSION} (sha256 {sha256(data)})", file=sys.stderr)
        return 2
    import pydantic

    with zipfile.ZipFile(wheel) as archive:
        module_source = archive.read(MODULE)
        licence = next(archive.read(n) for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE"))
    match = re.search(rb"filename:\s+(\S+)", module_source)  # datamodel-codegen's header: the schema file
    generated_from = match.group(1).decode() if match else "?"
    sys.path.insert(0, str(Path(wheel).resolve()))  # a pure-Python wheel imports as a zip
    from hera.workflows.models.io.argoproj.workflow import v1alpha1

    HERE.mkdir(parents=True, exist_ok=True)
    source = {"package": PACKAGE, "version": VERSION, "registry": "PyPI", "license": "Apache-2.0",
              "wheel_sha256": WHEEL_SHA256,
              "generated_from": f"Argo Workflows JSON schema ({generated_from}, Apache-2.0) by datamodel-codegen "
                                "into hera's pydantic models",
              "written_by": f"pydantic {pydantic.VERSION} model_json_schema(by_alias=True, mode='validation')",
              "extracted_by": "serving/k8s/schemas/extract_argo_workflows.py", "files": {}}
    for kind, name in KINDS.items():
        model = getattr(v1alpha1, kind)
        out = schema_bytes(model.model_json_schema(by_alias=True, mode="validation"))
        (HERE / name).write_bytes(out)
        source["files"][name] = {"kind": kind, "apiVersion": "argoproj.io/v1alpha1", "from": f"{MODULE}:{kind}",
                                 "from_sha256": sha256(module_source), "sha256": sha256(out)}
    return write_source(HERE, source, licence, "hera-7.1.0.dist-info/licenses/LICENSE")


if __name__ == "__main__":
    cli(main, __doc__)
