#!/usr/bin/env bash
# Create the peers' own venv (.venv-peers) so their packages never touch the project venv; idempotent.
#
#   bash benchmarks/peers/setup.sh            # everything except litert-torch
#   PEERS_LITERT=1 bash benchmarks/peers/setup.sh   # also litert-torch (own venv: tensorflow, torchao, jax)
#
# llama-cpp-python is compiled from its sdist (~10 min of CPU, 18-20 min wall on a busy 2-core box); the sdist's
# vendor/llama.cpp (convert_hf_to_gguf.py, gguf-py) is kept under $PEERS_WORK/llama.cpp.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VENV=${PEERS_VENV:-$ROOT/.venv-peers}
LITERT_VENV=${PEERS_LITERT_VENV:-$ROOT/.venv-peers-litert}
WORK=${PEERS_WORK:-/tmp/peers}
PY=${PEERS_PYTHON:-python3.11}
TORCH=torch==2.13.0  # the cached CPU wheel; never a bare `torch`
LLAMA_VERSION=${PEERS_LLAMA_VERSION:-}  # empty: the newest on the index
mkdir -p "$WORK"

make_venv() {  # $1: path; a venv that ignores itself in git
  [ -x "$1/bin/python" ] || "$PY" -m venv "$1"
  [ -f "$1/.gitignore" ] || echo '*' > "$1/.gitignore"
  "$1/bin/python" -m pip install -q --upgrade pip wheel setuptools >/dev/null
}

have() {  # $1: venv, $2..: import names; true when all import
  local v=$1; shift
  "$v/bin/python" -c "import importlib,sys; [importlib.import_module(m) for m in sys.argv[1:]]" "$@" 2>/dev/null
}

make_venv "$VENV"
if ! have "$VENV" torch numpy safetensors sentencepiece google.protobuf transformers onnx onnx_ir \
     onnxruntime_genai gguf psutil; then
  "$VENV/bin/pip" install "$TORCH" numpy safetensors sentencepiece protobuf transformers tokenizers \
    onnx onnx_ir onnxruntime onnxruntime-genai gguf psutil ml_dtypes
fi

SPEC=llama-cpp-python${LLAMA_VERSION:+==$LLAMA_VERSION}
# This CPU's features spelled out instead of GGML_NATIVE: native would also turn on ggml's AMX
# backend, whose batched matmul segfaults here (prefill of any batch > 1; llama.cpp issue 20824).
# Everything else native builds is kept: AVX-512 (VBMI, VNNI, BF16), AVX-VNNI, the CPU repack
# buffers, OpenMP threading, no BLAS (ggml's own kernels).
LLAMA_CMAKE="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
-DGGML_AVX_VNNI=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON \
-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_OPENMP=ON \
-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
amx_free() {  # llama_cpp imports and was built without AMX
  "$VENV/bin/python" -c "import llama_cpp, sys; sys.exit('AMX_INT8 = 1' in llama_cpp.llama_print_system_info().decode())" 2>/dev/null
}
if ! amx_free; then
  CMAKE_ARGS="$LLAMA_CMAKE" CMAKE_BUILD_PARALLEL_LEVEL=2 "$VENV/bin/pip" install --no-binary llama-cpp-python \
    --no-cache-dir --force-reinstall --no-deps "$SPEC"
  "$VENV/bin/pip" install "$SPEC"  # its dependencies (no-op when present)
fi

if [ ! -f "$WORK/llama.cpp/convert_hf_to_gguf.py" ]; then
  ver=$("$VENV/bin/python" -c "import llama_cpp; print(llama_cpp.__version__)")
  rm -rf "$WORK/sdist" && mkdir -p "$WORK/sdist"
  "$VENV/bin/pip" download -q --no-deps --no-binary :all: "llama-cpp-python==$ver" -d "$WORK/sdist"
  tar -xzf "$WORK"/sdist/llama_cpp_python-*.tar.gz -C "$WORK/sdist"
  rm -rf "$WORK/llama.cpp" && mv "$WORK"/sdist/llama_cpp_python-*/vendor/llama.cpp "$WORK/llama.cpp"
  rm -rf "$WORK/sdist"
fi

if [ "${PEERS_LITERT:-0}" = 1 ]; then
  make_venv "$LITERT_VENV"
  # litert-torch imports tensorflow.lite (schema) without declaring it: tensorflow-cpu too
  have "$LITERT_VENV" litert_torch tensorflow psutil || "$LITERT_VENV/bin/pip" install "$TORCH" litert-torch tensorflow-cpu psutil
fi
echo "peers venv ready: $VENV (llama.cpp scripts in $WORK/llama.cpp)"
