"""Fixtures for the eval tests: a real OpenAI-compatible HTTP server on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.evals.openai_stub import make_app, serve


@pytest.fixture(scope="session")
def stub_app():
    return make_app()


@pytest.fixture(scope="session")
def stub_url(stub_app) -> Iterator[str]:
    with serve(stub_app) as url:
        yield url
