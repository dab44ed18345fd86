"""`egd demo` end to end on a tiny budget: both runs, the table and a real PNG."""

from __future__ import annotations

import torch

from egalitarian.demo import demo


def test_demo_writes_runs_table_and_plot(tmp_path, capsys):
    torch.set_num_threads(1)
    rows = demo(out_dir=tmp_path, epochs=2)
    out = capsys.readouterr().out
    assert [r["method"] for r in rows] == ["sgd", "egd"]
    assert all(r["epochs"] == 2 for r in rows)  # 2 epochs of a budget this small cannot grok
    assert "SGD" in out and "EGD" in out and "memorized (ep)" in out
    png = (tmp_path / "demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    for m in ("sgd", "egd"):
        assert (tmp_path / m / "summary.json").exists() and (tmp_path / m / "metrics.csv").exists()
