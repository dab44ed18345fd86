"""egd reproduce: every table expands into valid runs; the cells are formatted as documented."""

from __future__ import annotations

import pytest

from egalitarian.errors import ConfigError
from egalitarian.reproduce import TABLES, _cell, build_sweep, reproduce


@pytest.mark.parametrize("name", sorted(TABLES))
@pytest.mark.parametrize("quick", [False, True])
def test_every_table_expands(tmp_path, name, quick):
    table = TABLES[name]
    sweep, where = build_sweep(name, 2, quick, tmp_path)
    settings = table.quick_settings if quick else list(table.settings)
    methods = table.quick_methods if quick else table.methods
    assert len(sweep.runs) == len(settings) * len(methods) * 2  # settings × methods × seeds
    assert set(where.values()) == {(s, m) for s in settings for m in methods}
    assert len({r.id for r in sweep.runs}) == len(sweep.runs)
    labels = {where[r.id]: r.label for r in sweep.runs}
    assert len(set(labels.values())) == len(labels)  # one label per (setting, method), seeds excluded
    assert table.baseline in methods
    for r in sweep.runs:
        assert r.config["train"]["threads"] == 1
        if quick:
            for key, value in table.quick_set.items():
                section, field = key.split(".")
                assert r.config[section][field] == value


def test_cells_by_hand():
    m = {"median": 120.5, "q25": 115.75, "q75": 125.25}
    assert _cell(m, 2, 2, 300) == "120.5 [115.75, 125.25]"
    assert _cell(m, 2, 3, 300) == "120.5 [115.75, 125.25]; 1 > 300"
    assert _cell(None, 0, 2, 300) == "> 300"


def test_unknown_table_and_bad_seeds(tmp_path):
    with pytest.raises(ConfigError, match="table5"):
        reproduce("table5", root=tmp_path)
    with pytest.raises(ConfigError, match="--seeds 0"):
        reproduce("table2", seeds=0, root=tmp_path)
