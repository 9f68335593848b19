#!/usr/bin/env bash
# Installs, once, the Python packages benches/crowd.py needs (aiortc from PyPI, with its PyAV
# H.264 decoder) into a virtualenv under target/ (shared, git-ignored). Idempotent; prints the
# interpreter's path on stdout. Override the place with WHEPCAST_BENCH_VENV.
#   py=$(scripts/setup-bench-py.sh) && "$py" benches/crowd.py ...
set -eu
cd "$(dirname "$0")/.."
venv=${WHEPCAST_BENCH_VENV:-target/bench-py}
want="aiortc==1.16.0"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -c 'import aiortc, av, aiohttp' 2>/dev/null \
  || [ "$("$venv/bin/python" -c 'import aiortc; print(aiortc.__version__)')" != "${want#*==}" ]; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$want" aiohttp >&2
fi
echo "$(cd "$venv" && pwd)/bin/python"
