"""Fixtures for the repository's tests, which treat each stage as a black box run by uvicorn."""

from pathlib import Path

import pytest

from tests.support.stage import ROOT


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def medium_solution() -> Path:
    return ROOT / "solutions" / "medium"
