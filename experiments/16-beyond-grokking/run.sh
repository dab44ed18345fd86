#!/usr/bin/env bash
# The whole experiment, one run at a time, resumable (rerun it to continue; SIGTERM stops it cleanly).  Per model:
# stage 1 tunes AdamW alone (MODEL-adamw.toml); its tuned lr goes into the lines of MODEL.toml marked AUX (the lr of
# the hybrids' AdamW part); stage 2 tunes every method (MODEL.toml, the same store: AdamW's runs are reused) and
# writes MODEL-leaderboard.md/json.
#
#     experiments/16-beyond-grokking/run.sh            (from anywhere; EGD=path/to/egd to pick the command)
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
egd=${EGD:-egd}
python=$(dirname "$(command -v "$egd")")/python
for model in ${MODELS:-gpt cnn}; do
  "$egd" tune "experiments/16-beyond-grokking/$model-adamw.toml" --workers 1
  "$python" - "$model" <<'PY'
import json, re, sys
from pathlib import Path

here, model = Path("experiments/16-beyond-grokking"), sys.argv[1]
(adamw,) = json.loads((here / f"{model}-leaderboard.json").read_text())
lr = adamw["values"]["optimizer.lr"]
spec = here / f"{model}.toml"
text = re.sub(r"= [0-9.e+-]+ \}(\s+# AUX)", lambda m: f"= {lr:g} }}{m.group(1)}", spec.read_text())
spec.write_text(text)
print(f"{model}: stage 1's AdamW lr {lr:g} is the hybrids' AdamW lr in {spec}", flush=True)
PY
  "$egd" tune "experiments/16-beyond-grokking/$model.toml" --workers 1
done
