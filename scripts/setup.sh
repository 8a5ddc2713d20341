#!/usr/bin/env bash
# One-time, idempotent set-up for a fresh machine: R + Seurat (Debian), a virtualenv in .venv
# with the locked Python packages, rpy2 and this project in editable mode.
# Re-running is cheap: each step is skipped when its stamp matches.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=.venv
say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

# --- R and Seurat (for the Seurat baselines through rpy2) -------------------------------
have_seurat() { command -v Rscript >/dev/null 2>&1 && Rscript -e 'suppressMessages(library(Seurat))' >/dev/null 2>&1; }
if ! have_seurat; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing R and Seurat from Debian (r-base-core, r-cran-seurat; ~2 min)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends r-base-core r-base-dev r-cran-seurat >/dev/null
  else
    say "R with Seurat is missing and cannot be installed here (needs root and apt-get)."
    say "Install Debian's r-base-core and r-cran-seurat (or R + Seurat 4.3 any other way);"
    say "until then the Seurat methods are reported as failed and their tests are skipped."
  fi
fi

# --- Python virtualenv ------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
stamp_value="$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)-$(have_seurat && echo r || echo nor)"
if [ "$(cat "$VENV/.setup-stamp" 2>/dev/null)" != "$stamp_value" ]; then
  say "installing Python packages from requirements.lock (first time: a few minutes)"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q -r requirements.lock
  if have_seurat; then
    "$PY" -m pip install -q "rpy2==3.5.17"
  fi
  "$PY" -m pip install -q --no-deps -e .
  echo "$stamp_value" > "$VENV/.setup-stamp"
else
  say "Python packages up to date"
fi
