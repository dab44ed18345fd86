"""A local sweep worker: ``python -m egalitarian.sweep.worker STORE RUN_ROOT TODO_JSON PARENT_PID``.

Started by the local executor with ``OMP_NUM_THREADS=1`` in its environment. It claims pending runs among
the ids in ``TODO_JSON`` one at a time, trains each in ``RUN_ROOT/RUN_ID`` (resuming from its checkpoint),
and commits the result to the store itself. On SIGINT/SIGTERM the run in progress saves its checkpoint
and is put back to ``pending``; the worker exits when nothing is pending or its parent is gone.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from .execute import Orphaned, error_message, execute_run, owner_name
from .store import Store


def _die_with_parent(parent: int) -> None:
    """Linux: get SIGTERM when the parent dies (even by kill -9); exit now if it is already gone."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        sys.exit(0)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    from ..train import RunStopped

    store_path, root, todo_path, parent_text = argv if argv is not None else sys.argv[1:]
    parent = int(parent_text)
    signal.signal(signal.SIGTERM, _interrupt)  # between runs; train() handles it during a run
    _die_with_parent(parent)
    ids = json.loads(Path(todo_path).read_text())
    owner = owner_name()

    def orphaned() -> bool:
        return os.getppid() != parent

    store = Store(store_path, create=False)
    try:
        while not orphaned():
            claim = store.claim(ids, owner)
            if claim is None:
                return 0
            run_id, config = claim
            try:
                summary, rows = execute_run(config, Path(root) / run_id, handle_signals=True, should_stop=orphaned)
            except (RunStopped, Orphaned):  # stopped by a signal, checkpoint saved; `finally` releases the run
                return 130
            except Exception as e:  # the run itself failed: record why, go on with the next one
                store.fail(run_id, owner, error_message(e))
                continue
            store.finish(run_id, owner, summary, rows)
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        store.release(owner)
        store.close()


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # everything is committed and closed; skip the interpreter's slow teardown of torch (~0.7 s)
