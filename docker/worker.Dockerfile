# A generation worker: transformers on one GPU (or the CPU). Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t qwen3-vl-worker .
# The torch wheel from PyPI is a CUDA build that brings its own CUDA libraries; the host
# needs only the NVIDIA driver and the NVIDIA Container Toolkit.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/cache/huggingface

WORKDIR /app

COPY requirements-worker.txt ./
RUN pip install -r requirements-worker.txt

COPY shared/ shared/
COPY worker/ worker/

# Downloaded weights go to HF_HOME; mount a volume there to keep them across restarts.
RUN useradd --create-home --uid 10001 app \
    && mkdir -p "$HF_HOME" \
    && chown -R app:app "$HF_HOME"
USER app

CMD ["python", "-m", "worker"]
