#!/usr/bin/env bash
# One-command install of unger-recbole (CPU or GPU) into the current Python environment.
#   bash install.sh            # torch (if missing), recbole 1.2.1 without ray, this package + pytest
# TORCH_SPEC picks the torch to install when none is present (default: torch==2.13.0; on a plain
# PyPI index for Linux that is a CUDA build: use e.g.
#   TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" bash install.sh
# for a CPU-only machine that has no local CPU wheel).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  # shellcheck disable=SC2086
  "$PYTHON" -m pip install ${TORCH_SPEC:-torch==2.13.0}
fi
# RecBole's metadata pins ray<=2.6.3 (no wheel for Python >= 3.12), thop and plotly, none of which
# this toolkit uses; its real needs are in setup.py's install_requires.
"$PYTHON" -m pip install --no-deps recbole==1.2.1
"$PYTHON" -m pip install -e ".[dev]"
