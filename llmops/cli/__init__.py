"""The `llmops` command line: one entry point for every stage.

    llmops --help

Each command group lives in its own module and imports its heavy libraries (torch,
transformers, onnxruntime) inside the command, so `llmops --help` stays fast. Exit codes:
0 passed, 1 a gate failed, 2 usage or input error.
"""

from __future__ import annotations

import sys

import click
from pydantic import ValidationError

from llmops.errors import GateFailed, InputError
from llmops.settings import apply_offline_env


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when invoked (or listed by --help)."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module_name, attr = self.lazy[name].rsplit(":", 1)
            module = __import__(module_name, fromlist=[attr])
            return getattr(module, attr)
        return super().get_command(ctx, name)


# command name -> "module:attribute"; every module here imports only click and the core at top level.
COMMANDS = {
    "data": "llmops.cli.data:data",
    "model": "llmops.cli.model:model",
    "train": "llmops.cli.model:train",
    "export": "llmops.cli.serving:export",
    "serve": "llmops.cli.serving:serve",
    "predict": "llmops.cli.serving:predict",
    "bench": "llmops.cli.bench:bench",
    "eval": "llmops.cli.evals:eval_cmd",
    "eval-base": "llmops.cli.evals:eval_base_cmd",
    "prompts": "llmops.cli.prompts:prompts",
    "registry": "llmops.cli.registry:registry",
    "pipeline": "llmops.cli.pipeline:pipeline",
    "gate": "llmops.cli.gate:gate",
    "loadtest": "llmops.cli.loadtest:loadtest",
    "audit": "llmops.cli.governance:audit",
    "keys": "llmops.cli.governance:keys",
    "release": "llmops.cli.release:release",
    "rollback": "llmops.cli.release:rollback",
    "status": "llmops.cli.release:status",
    "gateway": "llmops.cli.release:gateway",
    "tokenise": "llmops.cli.model:tokenise",
    "monitor": "llmops.cli.monitor:monitor",
    "feedback": "llmops.cli.feedback:feedback",
    "safety": "llmops.cli.safety:safety",
    "leakage": "llmops.cli.leakage:leakage",
    "deepeval-suite": "llmops.cli.deepeval_cmd:deepeval_suite",
    "card": "llmops.cli.cards:card",
    "compare": "llmops.cli.cards:compare",
    "publish": "llmops.cli.cards:publish",
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llmops")
def cli() -> None:
    """GitOps LLMOps pipeline: data, training, export, serving, evals and release as code."""


def main(argv: list[str] | None = None) -> int:
    apply_offline_env()
    try:
        # A command that raises click.exceptions.Exit(n) (e.g. 3, inconclusive) gets n back from click
        # here (standalone_mode=False returns it instead of raising); other commands return None.
        code = cli.main(args=argv, prog_name="llmops", standalone_mode=False)
    except InputError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except GateFailed as exc:
        click.echo(f"gate failed: {exc}", err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return 2
    except ValidationError as exc:  # a bad LLMOPS_* setting (llmops/settings.py)
        click.echo(f"error: {exc}", err=True)
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return code if type(code) is int else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
