#!/usr/bin/env bash
# Evaluate a model on every intent / emotion file of the shared public evaluation sets
# (evaluation only: they are never trained on and never copied into this repository).
#   scripts/eval-public.sh [PUBLIC_EVAL_DIR] [extra triage eval flags, e.g. --heads DIR --json]
set -euo pipefail
dir="${1:-../shared/data/public-eval}"
shift || true
files=()
for d in bitext_customer_support clinc150 xsid truevoice_intent xed indonlu_emot wisesight_sentiment indonlu_smsa; do
  [ -f "$dir/$d/eval.jsonl" ] && files+=(--data "$dir/$d/eval.jsonl")
done
exec cargo run --release --quiet -- eval "${files[@]}" "$@"
