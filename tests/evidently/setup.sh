#!/usr/bin/env bash
# Creates the Python environment for the Evidently parity test of ghaf-monitor, once.
#
# The venv lives outside the clone so that it survives checkouts and is shared by CI runs on
# the same machine. Rerunning the script is cheap: pip only installs what is missing.
#
#   GHAF_EVIDENTLY_VENV  venv directory (default: $HOME/.cache/ghaf-venv-evidently)
#   GHAF_PIP_CACHE       pip cache directory (default: $HOME/.cache/ghaf-pip)
set -euo pipefail

venv="${GHAF_EVIDENTLY_VENV:-$HOME/.cache/ghaf-venv-evidently}"
pip_cache="${GHAF_PIP_CACHE:-$HOME/.cache/ghaf-pip}"
python="${PYTHON:-python3}"

# Pinned versions: the compatibility mode of ghaf-monitor is checked against exactly these.
# evidently 0.7.x fails to import under pandas 3, so pandas stays on 2.x.
requirements=(
    "evidently==0.7.23"
    "pandas==2.3.3"
    "numpy==2.4.6"
    "scipy==1.17.1"
)

if [ ! -x "$venv/bin/python" ]; then
    echo "creating venv at $venv"
    "$python" -m venv "$venv"
fi

"$venv/bin/python" -m pip install --cache-dir "$pip_cache" --quiet "${requirements[@]}"
"$venv/bin/python" -c 'import evidently, pandas, numpy, scipy; print("evidently", evidently.__version__, "pandas", pandas.__version__, "numpy", numpy.__version__, "scipy", scipy.__version__)'
