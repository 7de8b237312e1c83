"""The CLI: --help on every command, fast start-up (no heavy imports), exit codes."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from llmops.cli import COMMANDS, cli, main


def _all_commands(group: click.Group, ctx: click.Context, prefix: tuple[str, ...] = ()):
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from _all_commands(cmd, ctx, (*prefix, name))


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    ctx = click.Context(cli)
    seen = []
    for path, cmd in _all_commands(cli, ctx):
        assert cmd.help or cmd.short_help, f"llmops {' '.join(path)} has no help text"
        assert main([*path, "--help"]) == 0
        assert "Usage:" in capsys.readouterr().out
        seen.append(path)
    assert {p[0] for p in seen} >= set(COMMANDS)


def test_help_does_not_import_heavy_libraries() -> None:
    code = ("import sys; from llmops.cli import main; main(['--help']); "
            "heavy = [m for m in ('torch', 'transformers', 'onnxruntime', 'pandas', 'fastapi', 'deepeval') "
            "if m in sys.modules]; print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_unknown_command_and_bad_input_exit_2(tmp_path, capsys) -> None:
    assert main(["no-such-command"]) == 2
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "training config not found" in capsys.readouterr().err
