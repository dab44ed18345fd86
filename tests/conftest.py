"""Shared test set-up: every test sees an empty data directory of its own, and leaves torch's thread count as
it found it.

The ``mnist`` task reads MNIST from the data directory (``$EGD_DATA``) when it holds the files; a developer who
ran ``egd data mnist`` must not get different tests (or slow ones) from CI.  Subprocesses inherit the variable.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _empty_data_directory(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EGD_DATA", str(tmp_path_factory.mktemp("egd-data")))


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """A test may set torch's intra-op thread count (runs and sweeps use one thread); the next test must not
    inherit it: which code path a CPU kernel takes, and so its rounding, can depend on the thread count."""
    import torch

    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """On a torch without ``torch.optim.Muon`` (before 2.9) a test that reaches Muon is skipped, saying so: the
    package's floor is older (``make floor``), and what Muon says there is tested by tests/test_torch_floor.py."""
    outcome = yield
    report = outcome.get_result()
    error = call.excinfo.value if call.excinfo is not None else None
    if isinstance(error, ImportError) and "(torch.optim.Muon)" in str(error):
        import torch

        if not hasattr(torch.optim, "Muon"):
            report.outcome = "skipped"
            report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {error}")
