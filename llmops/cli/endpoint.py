"""Commands that test a model take an endpoint URL or a model folder to serve: one helper for both."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import click

from llmops.errors import InputError


@contextlib.contextmanager
def endpoint_or_served(url: str | None, model_dir: Path | None, backend: str, *,
                       flags: str = "--endpoint URL or --model DIR") -> Iterator[str]:
    """Yield `url`, or serve `model_dir` on a free loopback port for the block (exactly one is given).

    The serving import stays inside, so a command given a URL never loads onnxruntime or torch.
    """
    if (url is None) == (model_dir is None):
        raise InputError(f"give exactly one of {flags}", field=flags.replace(" URL", "").replace(" DIR", "")
                         .replace(" or ", "/"))
    if url is not None:
        yield url
        return
    from serving.app import running_server

    with running_server(model_dir, port=0, backend=backend) as served:
        click.echo(f"serving {model_dir} ({backend}) at {served}", err=True)
        yield served
