"""Carry the boards' stores across sessions: a session's machine keeps nothing that git ignores (tunes/ among it),
so a board that outlasts a session is continued from a committed copy of its stores.

    python experiments/24-fair-boards/carry.py save      # tunes/fair-*.sqlite -> experiments/24-fair-boards/carry/
    python experiments/24-fair-boards/carry.py restore   # the reverse, only for a store that tunes/ lacks

``save`` copies each store consistently while the board runs (SQLite's backup API), gzipped.  The Optuna studies
(``*.optuna.sqlite``) are copied whole.  Of a sweep store, everything but the per-evaluation metrics of the tuning
runs (sweep ``NAME-tuning``) is copied: the runs table (each run's config, summary, status and times), the meta
table and the curves of every other sweep (reporting, robustness, hand check, transfer).  The tune reads its
tuning runs' summaries only, never their curves, so a restored store resumes where the copy was made: finished
runs are not run again, runs under way when it was made start again.  What the copy leaves out (the tuning runs'
curves and the run folders) is named in each store's meta table as ``carried``.

``restore`` never overwrites: a store already in tunes/ is the newer one and is kept.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sqlite3
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STORES = HERE.parent.parent / "tunes"
CARRY = HERE / "carry"


def _backup(src: Path, dst: Path) -> None:
    with sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=60) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()


def _slim(db: Path) -> str:
    """Drop the tuning runs' curves from a copied sweep store; what was dropped, in words."""
    with sqlite3.connect(db) as c:
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"runs", "metrics", "meta"} <= tables:
            return "whole"
        n = c.execute("DELETE FROM metrics WHERE run_id IN (SELECT id FROM runs WHERE sweep LIKE '%-tuning')").rowcount
        note = (f"copied {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} by carry.py without the "
                f"{n} metric rows of the tuning runs (sweep *-tuning) and without the run folders")
        c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('carried', ?)", (json.dumps(note),))
    c.close()
    with sqlite3.connect(db) as c:
        c.execute("VACUUM")
    c.close()
    return f"without {n} tuning metric rows"


def save(stores: Path = STORES, carry: Path = CARRY) -> list[Path]:
    """Every ``stores/fair-*.sqlite`` into ``carry/NAME.gz``; the copies written."""
    carry.mkdir(exist_ok=True)
    written = []
    for src in sorted(stores.glob("fair-*.sqlite")):
        tmp = carry / (src.name + ".tmp")
        tmp.unlink(missing_ok=True)
        _backup(src, tmp)
        what = _slim(tmp)
        out = carry / (src.name + ".gz")
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
