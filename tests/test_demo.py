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


def test_plot_leaves_the_users_matplotlib_backend_alone(tmp_path):
    import matplotlib
    import matplotlib.image as mpimg

    from egalitarian.demo import plot_runs

    runs = {}
    for name, accs in (("sgd", [0.1, 0.2, 0.3]), ("egd", [0.1, 0.6, 1.0])):
        d = tmp_path / name
        d.mkdir()
        lines = ["step,epoch,split,metric,value"]
        lines += [f"{i},{i},{split},acc,{a}" for i, a in enumerate(accs) for split in ("train", "test")]
        (d / "metrics.csv").write_text("\n".join(lines) + "\n")
        runs[name.upper()] = d
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        path = plot_runs(runs, tmp_path / "plot.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[1] > 600  # a real PNG, 7 in × 120 dpi wide
