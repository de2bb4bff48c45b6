#!/usr/bin/env bash
# One command that rebuilds the predictor's model, sidecar, reference input and accuracy table
# from the committed data in predictor/data/ (see predictor/MODEL_CARD.md). Training is CPU-only
# and seeded; the Python packages live in their own venv so the test suite never needs torch.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ENTENTE_TRAIN_VENV:-$HOME/.cache/entente-train-venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import torch, onnx, onnxruntime, numpy" 2>/dev/null; then
    "$VENV/bin/pip" install -q -r scripts/requirements-train.txt
fi
exec "$VENV/bin/python" scripts/train_predictor.py "$@"
