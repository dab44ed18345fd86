"""Carry the boards' stores across sessions: a session's machine keeps nothing that git ignores (tunes/ among it),
so a board that outlasts a session is continued from a committed copy of its stores.

    python experiments/24-fair-boards/carry.py save      # tunes/fair-*.sqlite -> experiments/24-fair-boards/carry/
    python experiments/24-fair-boards/carry.py restore   # the reverse, only for a store that tunes/ lacks

``save`` copies each store consistently while the board runs (SQLite's backup API), gzipped.  The Optuna studies
(``*.optuna.sqlite``) are copied whole.  Of a sweep store, everything but the runs' per-evaluation curves: the runs
table (each run's config, summary, status and times) and the meta table.  Nothing that continues a board reads a
curve (a tuning trial's value, the held-out table, robustness, hand check and transfer all read the runs'
summaries), except the report of a tune whose ``metric`` is ``"loss"``, which reads its reporting runs' curves:
those are kept (the boards' specs in this folder say which store has that metric).  So a restored store resumes
where the copy was made: finished runs are not run again, runs under way when it was made start again.  What the
copy leaves out (the curves and the run folders) is named in each store's meta table as ``carried``.

``restore`` never overwrites: a store already in tunes/ is the newer one and is kept.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sqlite3
import sys
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
STORES = HERE.parent.parent / "tunes"
CARRY = HERE / "carry"


def _backup(src: Path, dst: Path) -> None:
    with sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=60) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()


def _loss_stores(specs: Path) -> set[str]:
    """The file names of the stores whose tune's ``metric`` is ``"loss"`` (their report reads curves)."""
    out = set()
    for path in specs.glob("*.toml"):
        tune = tomllib.loads(path.read_text()).get("tune", {})
        if isinstance(tune, dict) and tune.get("metric") == "loss" and "store" in tune:
            out.add(Path(tune["store"]).name)
    return out


def _slim(db: Path, keep_report: bool) -> str:
    """Drop the curves a resumed board never reads from a copied sweep store; what was dropped, in words."""
    with sqlite3.connect(db) as c:
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"runs", "metrics", "meta"} <= tables:
            return "whole"
        keep = "(SELECT id FROM runs WHERE sweep LIKE '%-report')" if keep_report else "(SELECT NULL WHERE 0)"
        n = c.execute(f"DELETE FROM metrics WHERE run_id NOT IN {keep}").rowcount
        what = f"{n} metric rows (every run's curve" + (" but the reporting runs'" if keep_report else "") + ")"
        note = (f"copied {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} by carry.py without {what} and "
                "without the run folders")
        c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('carried', ?)", (json.dumps(note),))
    c.close()
    with sqlite3.connect(db) as c:
        c.execute("VACUUM")
    c.close()
    return f"without {what}"


def save(stores: Path = STORES, carry: Path = CARRY, specs: Path = HERE) -> list[Path]:
    """Every ``stores/fair-*.sqlite`` into ``carry/NAME.gz``; the copies written.  ``specs``: the folder of the
    boards' tune specs (which stores keep their reporting curves).  A store not written since its copy was made
    (neither the file nor its write-ahead log is newer than the copy: a finished board) is not copied again, so a
    finished board's copy does not change with every save."""
    carry.mkdir(exist_ok=True)
    loss = _loss_stores(specs)
    written = []
    for src in sorted(stores.glob("fair-*.sqlite")):
        out = carry / (src.name + ".gz")
        wal = src.with_name(src.name + "-wal")
        changed = max(src.stat().st_mtime, wal.stat().st_mtime if wal.exists() else 0.0)
        if out.exists() and out.stat().st_mtime > changed:
            print(f"{src} -> {out}: not written since its copy, kept")
            continue
        tmp = carry / (src.name + ".tmp")
        tmp.unlink(missing_ok=True)
        _backup(src, tmp)
        what = _slim(tmp, keep_report=src.name in loss)
        part = out.with_suffix(".gz.part")
        with open(tmp, "rb") as f, gzip.GzipFile(part, "wb", mtime=0) as g:
            shutil.copyfileobj(f, g)
        tmp.unlink()
        part.replace(out)  # atomic: a copy is whole or the old one stays
        written.append(out)
        print(f"{src} -> {out} ({out.stat().st_size / 1e6:.2f} MB, {what})")
    return written


def restore(stores: Path = STORES, carry: Path = CARRY) -> list[Path]:
    """Every ``carry/fair-*.sqlite.gz`` whose store ``stores`` lacks; the stores written."""
    stores.mkdir(exist_ok=True)
    written = []
    for gz in sorted(carry.glob("fair-*.sqlite.gz")):
        dst = stores / gz.name[:-3]
        if dst.exists():
            print(f"{dst} exists: kept (not restored from {gz})")
            continue
        part = dst.with_name(dst.name + ".part")
        with gzip.open(gz, "rb") as g, open(part, "wb") as f:
            shutil.copyfileobj(g, f)
        part.replace(dst)
        written.append(dst)
        print(f"{gz} -> {dst}")
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("save", "restore"):
        print("usage: carry.py save|restore", file=sys.stderr)
        sys.exit(2)
    {"save": save, "restore": restore}[sys.argv[1]]()
