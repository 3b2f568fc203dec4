# Sourced by scripts/demo and scripts/test: create .venv if missing and install the package
# (with the test extras) when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "error: $PYTHON not found; install Python >= 3.11" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: Python >= 3.11 is required ($("$PYTHON" --version))" >&2
  exit 1
fi
if [[ ! -x .venv/bin/python ]]; then
  echo "creating .venv ..." >&2
  "$PYTHON" -m venv .venv
fi
STAMP=.venv/.modecollapse-install-stamp
WANT="$(cat pyproject.toml | sha256sum | cut -d' ' -f1)"
if [[ ! -f $STAMP || "$(cat "$STAMP")" != "$WANT" ]] || ! .venv/bin/python -c 'import modecollapse' 2>/dev/null; then
  echo "installing modecollapse and its dependencies into .venv (log: .venv/install.log) ..." >&2
  if ! { .venv/bin/python -m pip install --upgrade pip \
         && .venv/bin/python -m pip install -e ".[test]"; } > .venv/install.log 2>&1; then
    tail -n 20 .venv/install.log >&2
    echo "error: installation failed; see .venv/install.log" >&2
    exit 1
  fi
  echo "$WANT" > "$STAMP"
fi
export PATH="$ROOT/.venv/bin:$PATH"
# Persistent XLA compilation cache: later runs skip most of the compile time.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$ROOT/.venv/jax-cache}"
