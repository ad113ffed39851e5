"""Shared fixtures: config files, kernels, services."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # makes tests.plugins importable by dotted path

pytest_plugins = ["tests.routing_support"]  # its `world` fixture serves the routing test files

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# The gRPC transport's tests need the grpc extra (in .[dev]); a venv made before it was
# added skips them locally, CI (which installs .[dev]) fails instead.
if not IN_CI and importlib.util.find_spec("grpc") is None:
    collect_ignore = ["test_transport_grpc.py", "test_transport_grpc_tls.py"]


def service_unavailable(what: str) -> None:
    """Skip locally, fail in CI: a test that needs a service must not pass by skipping."""
    if IN_CI:
        pytest.fail(f"{what} is required in CI but unavailable", pytrace=False)
    pytest.skip(f"{what} unavailable")


@pytest.fixture(autouse=True)
def _run_in_tmp_dir(tmp_path, monkeypatch):
    """A test that starts a kernel on defaults writes ./kefu-data: keep it out of the repo."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def write_config(tmp_path):
    """Write a kefu.toml into a temp dir and return its path."""

    def write(text: str, name: str = "kefu.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def data_dir_config(write_config, tmp_path):
    """A minimal config whose data dir lives in the temp dir."""
    return write_config(f'[server]\ndata_dir = "{tmp_path / "data"}"\n')
