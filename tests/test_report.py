"""egd report on hand-made run directories: tables by hand, real PNGs, a self-contained HTML page."""

from __future__ import annotations

import base64
import io
import json
import re

import matplotlib
import matplotlib.image as mpimg
import pytest

from egalitarian.cli import main
from egalitarian.report import load_runs, write_report
from egalitarian.report.core import LoadedRun, band, facets, group_runs, summary_table

CURVES = {  # (label, seed) -> test accuracy at steps 0, 10, 20
    ("egd", 0): [0.0, 0.5, 0.96],
    ("egd", 1): [0.0, 0.7, 0.98],
    ("sgd", 0): [0.0, 0.0, 0.01],
    ("sgd", 1): [0.0, 0.0, 0.02],
}


def _write_run(d, label, seed, accs):
    d.mkdir(parents=True)
    lines = ["step,epoch,split,metric,value"]
    for i, a in enumerate(accs):
        lines += [f"{10 * i},{i},test,acc,{a}", f"{10 * i},{i},train,acc,{min(1.0, 2 * a + 0.5)}",
                  f"{10 * i},{i},test,loss,{1 - a}", f"{10 * i},{i},diag,lar,{0.5 + a / 10}"]
    (d / "metrics.csv").write_text("\n".join(lines) + "\n")
    grok = next(({"step": 10 * i, "epoch": i, "seconds": 1.5 * i} for i, a in enumerate(accs) if a >= 0.95), None)
    summary = {"name": label, "grok": grok, "final_test_acc": accs[-1]}
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "config.json").write_text(json.dumps({"config": {"train": {"seed": seed}}}))


def _runs(tmp_path):
    for (label, seed), accs in CURVES.items():
        _write_run(tmp_path / "runs" / f"{label}-{seed}", label, seed, accs)
    return tmp_path / "runs"


def test_band_and_table_by_hand(tmp_path):
    groups = group_runs(load_runs(_runs(tmp_path)))
    steps, med, lo, hi = band(groups["egd"], "test", "acc")
    assert steps == [0, 10, 20]
    assert med == [0.0, 0.6, 0.97] and lo == [0.0, 0.5, 0.96] and hi == [0.0, 0.7, 0.98]
    rows = {r["group"]: r for r in summary_table(groups)}
    assert rows["egd"]["grokked"] == "2/2" and rows["egd"]["steps to grok"] == "20 [20, 20]"
    assert rows["egd"]["final test acc"] == "0.9700"
    assert rows["sgd"]["grokked"] == "0/2" and rows["sgd"]["steps to grok"] == "-"


def test_facets_one_panel_per_setting_with_method_labels():
    def run(method, setting, seed):
        params = {"setting": setting, "method": method, "seed": seed}
        return LoadedRun(f"method={method} setting={setting}", seed, {}, [], params)

    runs = [run(m, s, seed) for s in ("k=2 (n=400)", "k=3 (n=100)") for m in ("egd", "sgd") for seed in (0, 1)]
    panels = facets(group_runs(runs))
    assert list(panels) == ["k=2 (n=400)", "k=3 (n=100)"]
    for setting, groups in panels.items():
        assert list(groups) == ["method=egd", "method=sgd"]
        assert all(r.params["setting"] == setting for rs in groups.values() for r in rs)
        assert [len(rs) for rs in groups.values()] == [2, 2]
    # no setting (run directories) or a single one: one panel with every group, labels unchanged
    single = [r for r in runs if r.params["setting"] == "k=2 (n=400)"]
    assert facets(group_runs(single)) == {"": group_runs(single)}
    plain = [LoadedRun("egd", 0, {}, []), LoadedRun("sgd", 0, {}, [])]
    assert list(facets(group_runs(plain))[""]) == ["egd", "sgd"]


def test_report_files_are_valid_and_self_contained(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["report", str(_runs(tmp_path)), "--out", str(out)]) == 0
    for name in ("accuracy.png", "loss.png", "diag_lar.png"):
        img = mpimg.imread(out / name)  # decodes: a real PNG
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
    page = (out / "report.html").read_text()
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "src=\"http" not in page and "<script" not in page  # nothing to fetch: opens from disk
    blobs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(blobs) == 3
    for b in blobs:
        assert mpimg.imread(io.BytesIO(base64.b64decode(b)), format="png").ndim == 3
    assert "<td>egd</td>" in page and "<td>sgd</td>" in page
    md = (out / "summary.md").read_text()
    assert md.splitlines()[0].startswith("| group | n | grokked |") and "| egd | 2 | 2/2 |" in md
    assert (out / "summary.csv").read_text().splitlines()[0].startswith("group,n,grokked")


@pytest.fixture
def svg_backend():
    """The user's backend is "svg" during the test; restored afterwards."""
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    yield "svg"
    matplotlib.use(before)


def test_report_leaves_the_users_matplotlib_backend_alone(tmp_path, svg_backend):
    out = write_report(_runs(tmp_path), tmp_path / "out")
    assert matplotlib.get_backend() == svg_backend
    assert mpimg.imread(out.parent / "accuracy.png").ndim == 3  # still PNGs, drawn on their own Agg canvas


def test_report_bad_path(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    (tmp_path / "junk.sqlite").write_text("not a database")
    assert main(["report", str(tmp_path / "junk.sqlite")]) == 2
