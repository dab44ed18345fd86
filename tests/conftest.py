"""Shared test set-up: every test sees an empty data directory of its own.

The ``mnist`` task reads MNIST from the data directory (``$EGD_DATA``) when it holds the files; a developer who
ran ``egd data mnist`` must not get different tests (or slow ones) from CI.  Subprocesses inherit the variable.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _empty_data_directory(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EGD_DATA", str(tmp_path_factory.mktemp("egd-data")))
