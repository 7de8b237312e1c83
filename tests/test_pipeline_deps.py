"""Every stage of pipeline.yaml declares, in its deps, all the project code its command runs.

    .venv/bin/pytest tests/test_pipeline_deps.py -q

A stage is skipped when the hash of its deps is unchanged (llmops/jobs/pipeline.py), so a code
file the stage runs but does not declare would let an edit to it go unnoticed. For each stage:
the command line is resolved to its click command through the CLI's own table
(llmops.cli.COMMANDS, then the group's subcommands); the modules that command reaches are found by
static import analysis (`ast`) of the command's function (and the helpers of its module it calls),
then of every project module it imports, top-level and in-function imports alike, transitively.
Third-party and standard-library imports are ignored, as is the entry point every command shares
(`python -m llmops`: llmops/__main__.py and the dispatcher llmops/cli/__init__.py). A package's
__init__.py counts only when it is imported by name. A dep covers a file when it is that file or a
folder above it (how hash_paths reads deps).
"""

from __future__ import annotations

import ast
import inspect
from functools import cache
from pathlib import Path

import click
import pytest

from llmops.jobs.pipeline import Stage, load_pipeline, load_pipelines

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("llmops", "training", "evals", "serving", "loadtests", "data", "governance")
SHARED_ENTRY = {"llmops/__main__.py", "llmops/cli/__init__.py"}
SPEC = load_pipeline(REPO / "pipeline.yaml")  # merge
STAGES = {f"{p}.{name}": stage for p, spec in load_pipelines(REPO / "pipeline.yaml").items()
          for name, stage in spec.stages.items()}  # both pipelines' stages, as "<pipeline>.<stage>"


def module_file(name: str) -> str | None:
    """The repo-relative file of a project module, or None (third-party, stdlib, a name inside a module)."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = REPO.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.relative_to(REPO).as_posix()
    return None


def module_name(rel: str) -> str:
    parts = rel.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(nodes: list[ast.AST], current: str) -> set[str]:
    """Project modules named by the import statements anywhere inside `nodes` (function bodies included)."""
    is_package = (module_file(current) or "").endswith("__init__.py")
    package = current if is_package else current.rpartition(".")[0]
    found: set[str] = set()
    for node in (n for top in nodes for n in ast.walk(top)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if module_file(alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{node.module}" if node.module else anchor
            else:
                base = node.module or ""
            if module_file(base):
                found.add(base)
            # `from pkg import submodule` imports the submodule too.
            found.update(f"{base}.{alias.name}" for alias in node.names if module_file(f"{base}.{alias.name}"))
    return found


@cache
def module_imports(rel: str) -> frozenset[str]:
    tree = ast.parse((REPO / rel).read_text(encoding="utf-8"), filename=rel)
    return frozenset(imported_modules([tree], module_name(rel)))


def reached_files(roots: set[str]) -> set[str]:
    """Files of every project module reachable from the `roots` modules."""
    seen: set[str] = set()
    pending = [f for f in (module_file(m) for m in roots) if f]
    while pending:
        rel = pending.pop()
        if rel in seen:
            continue
        seen.add(rel)
        pending.extend(f for f in (module_file(m) for m in module_imports(rel)) if f and f not in seen)
    return seen - SHARED_ENTRY


def resolve_command(cmd: str) -> click.Command:
    """The click command an `llmops` command line runs, through the CLI's own lazy table and groups."""
    from llmops.cli import cli

    words = cmd.split()
    ctx = click.Context(cli)
    command: click.Command | None = cli.get_command(ctx, words[0])
    for word in words[1:]:
        if not isinstance(command, click.Group):
            break
        command = command.get_command(ctx, word)
    assert command is not None and not isinstance(command, click.Group), f"no command for {cmd!r}"
    return command


def command_roots(command: click.Command) -> tuple[str, set[str]]:
    """(the command's module file, the project modules imported by that module at top level, by the
    command's function and by the module-level helpers it calls, transitively)."""
    function = inspect.unwrap(command.callback)
    module = inspect.getmodule(function).__name__
    rel = Path(inspect.getsourcefile(function)).resolve().relative_to(REPO).as_posix()
    tree = ast.parse((REPO / rel).read_text(encoding="utf-8"), filename=rel)
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    nodes: list[ast.AST] = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    pending, done = [function.__name__], {function.__name__}
    while pending:
        body = defs[pending.pop()].body  # the body only: a decorator names the group, not a helper
        nodes.extend(body)
        called = {n.id for stmt in body for n in ast.walk(stmt) if isinstance(n, ast.Name)}
        for name in sorted(called & defs.keys() - done):
            done.add(name)
            pending.append(name)
    return rel, imported_modules(nodes, module) - {module}


def stage_code(cmd: str) -> set[str]:
    # The command's own module counts as a file, not through all its imports: only its function's.
    rel, roots = command_roots(resolve_command(cmd))
    return {rel} | reached_files(roots)


def covered(path: str, deps: list[str]) -> bool:
    """A dep covers a file when it is that file or a folder above it (how hash_paths hashes deps)."""
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def missing_deps(stage: Stage) -> list[str]:
    return sorted(f for f in stage_code(stage.cmd) if not covered(f, stage.deps))


def test_each_stage_command_resolves_to_a_command() -> None:
    for name, stage in STAGES.items():
        assert resolve_command(stage.cmd).callback is not None, name


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_deps_cover_the_code_its_command_reaches(stage: str) -> None:
    missing = missing_deps(STAGES[stage])
    pipeline, name = stage.split(".", 1)
    assert not missing, (f"stage {name!r} runs {', '.join(missing)} but pipeline.yaml does not list "
                         f"{'it' if len(missing) == 1 else 'them'} in pipelines.{pipeline}.stages.{name}.deps")


def test_a_dropped_dep_is_named_and_a_folder_covers_its_files() -> None:
    register = SPEC.stages["register"]
    dropped = register.model_copy(update={"deps": [d for d in register.deps if d != "llmops/jobs/register.py"]})
    assert missing_deps(dropped) == ["llmops/jobs/register.py"]
    folder = register.model_copy(update={"deps": [*dropped.deps, "llmops/jobs"]})
    assert missing_deps(folder) == []


def test_the_analysis_follows_in_function_imports_and_ignores_third_party() -> None:
    # `llmops safety` imports evals.safety_runner inside its function; serving.app is reached only
    # through llmops.cli.endpoint's in-function import.
    code = stage_code("safety --model m --out o")
    assert {"llmops/cli/safety.py", "evals/safety_runner.py", "llmops/cli/endpoint.py", "serving/app.py"} <= code
    assert all(f.split("/")[0] in PACKAGES for f in code)
    assert not code & SHARED_ENTRY
