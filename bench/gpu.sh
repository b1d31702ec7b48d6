#!/usr/bin/env bash
# The GPU measurement in one command (docs/gpu.md): bash bench/gpu.sh [--copy-to DIR] [python -m bench.gpu flags]
#
# Runs from any checkout: with the project's .venv when there is one, else the machine's python3 (a lent GPU
# machine's, which holds torch). Wheels found in .whl/ (what that machine lacks and cannot download:
# docs/gpu.md lists them) are installed into a scratch directory first. The project itself is put on
# PYTHONPATH rather than installed, and with it client/ for the generated reranker.v1 stubs.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ -x .venv/bin/python ]; then python=.venv/bin/python; fi
if compgen -G ".whl/*.whl" >/dev/null; then
  site=${TMPDIR:-/tmp}/ara-reranker-site
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD:$PWD/server:$PWD/client${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$python" -m bench.gpu "$@"
