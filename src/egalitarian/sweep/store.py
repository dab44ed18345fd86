"""The results store: one SQLite file (WAL mode) with the runs of a sweep and their metric curves.

Tables::

    runs     id (config hash, primary key), sweep, idx (expansion order), group_key (hash of the config
             without seeds), label, params, config (JSON), status (pending | running | done | failed),
             attempts, worker, started, finished, summary (JSON), error
    metrics  run_id, step, epoch, split, metric, value   (the run's metrics.csv)
    meta     key, value (JSON): e.g. the baseline of the last sweep run into this store

Every write is one short ``BEGIN IMMEDIATE`` transaction, so several processes may write at once (WAL lets
readers proceed; writers wait up to ``timeout`` seconds for each other). A run is claimed by setting it
``running`` with the claimer's name as ``worker``; it is finished (status ``done``, summary and *all* of its
metric rows, replacing any earlier ones) in one transaction, and only by the worker that holds the claim.
So a killed process leaves at most a ``running`` row, which :meth:`Store.reset_stale` or
:meth:`Store.release` puts back to ``pending``, and never a half-written result.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..io import make_dir
from ..rundir import MetricRow

JOB_STATES = ("pending", "running", "done", "failed")
"""A run's place in a sweep's queue (not how it ended: that is its summary's ``status``)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id        TEXT PRIMARY KEY,
    sweep     TEXT NOT NULL,
    idx       INTEGER NOT NULL,
    group_key TEXT NOT NULL,
    label     TEXT NOT NULL,
    params    TEXT NOT NULL,
    config    TEXT NOT NULL,
    status    TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts  INTEGER NOT NULL DEFAULT 0,
    worker    TEXT,
    started   REAL,
    finished  REAL,
    summary   TEXT,
    error     TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs(id),
    step   INTEGER NOT NULL,
    epoch  INTEGER NOT NULL,
    split  TEXT NOT NULL,
    metric TEXT NOT NULL,
    value  REAL
);
CREATE INDEX IF NOT EXISTS metrics_run ON metrics(run_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
"""

_IDS = "id IN (SELECT value FROM json_each(?))"


def damaged(path: Path, e: sqlite3.DatabaseError) -> ConfigError:
    """The one message for a store SQLite cannot read: damaged (``database disk image is malformed``) or not a
    database at all (``file is not a database``); it names the file and the way out."""
    what = "is not a results store" if getattr(e, "sqlite_errorname", "") == "SQLITE_NOTADB" else "is damaged"
    return ConfigError(
        f"results store {str(path)!r} {what} ({e}); restore it from a copy, or move it away and run the "
        "sweep again (its runs resume from the checkpoints in their run directories)"
    )


def unopenable(path: Path, e: Exception) -> ConfigError:
    """The one message for a store SQLite cannot open or write (a read-only file or directory, a place where no
    file can be made): it names the file."""
    return ConfigError(f"results store {str(path)!r} cannot be opened for writing ({e}): it must be a file in a "
                       "writable directory; give another path")


def _is_damage(e: sqlite3.DatabaseError) -> bool:
    """Corrupt or not a database, as opposed to a busy, locked or read-only one (OperationalError)."""
    return getattr(e, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or type(e) is sqlite3.DatabaseError


def _named(method: Callable[..., Any]) -> Callable[..., Any]:
    """A store method whose damaged-database errors become :func:`damaged` ConfigErrors naming the store."""

    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as e:
            if _is_damage(e):
                raise damaged(self.path, e) from None
            raise

    return wrapper


class Store(AbstractContextManager["Store"]):
    """A results store at ``path`` (created on first use unless ``create=False``)."""

    def __init__(self, path: str | Path, *, create: bool = True, timeout: float = 60.0):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise ConfigError(f"results store {str(self.path)!r} does not exist")
        if create:
            make_dir(self.path.parent, "results store's directory")
        try:
            self.db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        except sqlite3.OperationalError as e:  # a directory, or a place no file can be made (/proc)
            raise unopenable(self.path, e) from None
        try:
            self._open(create, timeout)
        except sqlite3.DatabaseError as e:
            self.db.close()
            if _is_damage(e):
                raise damaged(self.path, e) from None
            if not create:  # e.g. an SQLite file of something else: no such table
                raise ConfigError(f"{str(self.path)!r} is not a results store: {e}") from None
            if getattr(e, "sqlite_errorname", "") in ("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM"):
                raise unopenable(self.path, e) from None
            raise

    def _open(self, create: bool, timeout: float) -> None:
        self.db.row_factory = sqlite3.Row
        self.db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        if not create:
            self.db.execute("SELECT 1 FROM runs LIMIT 1").fetchall()
            self.db.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
        else:
            self.db.execute("PRAGMA journal_mode = WAL")
            with self.transaction() as db:  # (executescript would commit first)
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
        self.db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: a process crash loses nothing committed

    def close(self) -> None:
        self.db.close()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed on success, rolled back on any exception."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -------------------------------------------------------------------------------------------- writes

    @_named
    def add(self, sweep: str, runs: Sequence[Any]) -> int:
        """Insert the runs that are missing as ``pending`` (idempotent); returns how many were new.

        ``runs`` are :class:`~egalitarian.sweep.spec.PlannedRun`. Existing rows keep their status and results; only
        their labels and order are refreshed from this sweep.
        """
        with self.transaction() as db:
            before = db.execute("SELECT count(*) FROM runs").fetchone()[0]
            for i, r in enumerate(runs):
                db.execute(
                    "INSERT INTO runs (id, sweep, idx, group_key, label, params, config) VALUES (?,?,?,?,?,?,?)"
                    " ON CONFLICT(id) DO UPDATE SET sweep=excluded.sweep, idx=excluded.idx, label=excluded.label,"
                    " params=excluded.params",
                    (r.id, sweep, i, r.group, r.label, json.dumps(r.params), json.dumps(r.config)),
                )
            return db.execute("SELECT count(*) FROM runs").fetchone()[0] - before

    @_named
    def reset_stale(self) -> int:
        """Every ``running`` row back to ``pending`` (call only when no worker can be alive, e.g. under the
        sweep lock at start-up); returns how many."""
        with self.transaction() as db:
            return db.execute("UPDATE runs SET status='pending', worker=NULL WHERE status='running'").rowcount

    @_named
    def requeue_failed(self, ids: Sequence[str]) -> int:
        """Failed runs among ``ids`` back to ``pending`` (a new ``egd sweep`` retries them once more)."""
        with self.transaction() as db:
            sql = f"UPDATE runs SET status='pending', worker=NULL WHERE status='failed' AND {_IDS}"
            return db.execute(sql, (json.dumps(list(ids)),)).rowcount

    @_named
    def claim(self, ids: Sequence[str], worker: str) -> tuple[str, dict[str, Any]] | None:
        """Atomically take the first ``pending`` run among ``ids`` (in sweep order) for ``worker``.

        Returns ``(run_id, config)``, or None when nothing is pending.
        """
        with self.transaction() as db:
            row = db.execute(
                f"SELECT id, config FROM runs WHERE status='pending' AND {_IDS} ORDER BY idx, id LIMIT 1",
                (json.dumps(list(ids)),),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE runs SET status='running', attempts=attempts+1, worker=?, started=?, error=NULL WHERE id=?",
                (worker, time.time(), row["id"]),
            )
            return row["id"], json.loads(row["config"])

    @_named
    def finish(self, run_id: str, worker: str, summary: dict[str, Any], rows: Iterable[Sequence[Any]]) -> bool:
        """Mark the run ``done`` with its summary and metric rows, in one transaction.

        Only the worker holding the claim may finish a run; returns False (and writes nothing) otherwise,
        e.g. when the run was released after its worker was presumed dead.
        """
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE runs SET status='done', finished=?, summary=?, error=NULL"
                " WHERE id=? AND status='running' AND worker=?",
                (time.time(), json.dumps(summary, default=str), run_id, worker),
            )
            if cur.rowcount != 1:
                return False
            db.execute("DELETE FROM metrics WHERE run_id=?", (run_id,))
            db.executemany(
                "INSERT INTO metrics (run_id, step, epoch, split, metric, value) VALUES (?,?,?,?,?,?)",
                ((run_id, *r) for r in rows),
            )
            return True

    @_named
    def fail(self, run_id: str, worker: str, error: str) -> bool:
        """Mark the run ``failed`` with an error message (only by the worker holding the claim)."""
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE runs SET status='failed', finished=?, error=? WHERE id=? AND status='running' AND worker=?",
                (time.time(), error, run_id, worker),
            )
            return cur.rowcount == 1

    @_named
    def release(
        self, worker: str, *, run_id: str | None = None, max_attempts: int | None = None, reason: str = ""
    ) -> int:
        """Put the runs ``worker`` holds (or just ``run_id``) back to ``pending``; returns how many.

        With ``max_attempts``, a run that has already been tried that often is marked ``failed`` with
        ``reason`` instead, so that a run which kills its worker every time does not loop forever.
        """
        where = "status='running' AND worker=?" + (" AND id=?" if run_id else "")
        args = (worker, run_id) if run_id else (worker,)
        with self.transaction() as db:
            n = 0
            if max_attempts is not None:
                n += db.execute(
                    f"UPDATE runs SET status='failed', finished=?, error=? WHERE {where} AND attempts>=?",
                    (time.time(), f"{reason} on each of {max_attempts} attempts", *args, max_attempts),
                ).rowcount
            n += db.execute(f"UPDATE runs SET status='pending', worker=NULL WHERE {where}", args).rowcount
            return n

    @_named
    def set_meta(self, key: str, value: Any) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # --------------------------------------------------------------------------------------------- reads

    @_named
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    @_named
    def runs(self, ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """All runs (or those in ``ids``) in sweep order, JSON columns decoded."""
        sql = "SELECT * FROM runs" + (f" WHERE {_IDS}" if ids is not None else "") + " ORDER BY sweep, idx, id"
        out = []
        for row in self.db.execute(sql, () if ids is None else (json.dumps(list(ids)),)):
            r = dict(row)
            for key in ("params", "config", "summary"):
                r[key] = json.loads(r[key]) if r[key] is not None else None
            out.append(r)
        return out

    @_named
    def counts(self, ids: Sequence[str] | None = None) -> dict[str, int]:
        """Number of runs per status (all four keys present)."""
        sql = "SELECT status, count(*) FROM runs" + (f" WHERE {_IDS}" if ids is not None else "")
        rows = self.db.execute(sql + " GROUP BY status", () if ids is None else (json.dumps(list(ids)),))
        return {s: 0 for s in JOB_STATES} | {s: n for s, n in rows}

    @_named
    def metrics(self, run_id: str) -> list[MetricRow]:
        """A run's metric rows, in training order (a NaN value reads back as None: SQLite stores it as NULL)."""
        rows = self.db.execute(
            "SELECT step, epoch, split, metric, value FROM metrics WHERE run_id=? ORDER BY rowid", (run_id,)
        )
        return [MetricRow(*r) for r in rows]
