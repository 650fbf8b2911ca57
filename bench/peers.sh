#!/usr/bin/env bash
# The peers the comparison runs, each in its own virtualenv under the cache (never in .venv:
# their pins would fight the project's). Idempotent: a venv that imports its tool is kept.
#
#   chaostoolkit: chaostoolkit + chaostoolkit-kubernetes 0.39 (chaostoolkit >= 1.20 needs
#                 Python 3.12; on 3.11 pip picks 1.19.0)
#   krkn:         krkn-lib 7.0.x (Python >= 3.11; pins kubernetes<36, numpy 1.26.4, ...)
set -euo pipefail
cache=${AFTERSHOCK_CACHE:-$HOME/.cache/aftershock}
venvs="$cache/bench-venvs"
python=${PYTHON:-python3}
mkdir -p "$venvs"

ensure() {  # name, import check, pip args...
  local name=$1 check=$2
  shift 2
  if "$venvs/$name/bin/python" -c "$check" >/dev/null 2>&1; then
    return
  fi
  echo "[bench] installing $name into $venvs/$name" >&2
  rm -rf "${venvs:?}/$name"
  "$python" -m venv "$venvs/$name"
  "$venvs/$name/bin/pip" install --quiet --upgrade pip
  "$venvs/$name/bin/pip" install --quiet "$@"
}

ensure chaostoolkit "import chaostoolkit, chaosk8s" chaostoolkit "chaostoolkit-kubernetes==0.39.0"
ensure krkn "import krkn_lib.k8s.pod_monitor" "krkn-lib>=7.0,<7.1"
echo "$venvs"
