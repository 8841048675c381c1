# The gateway: FastAPI, no torch. Build from the repository root:
#   docker build -f docker/api.Dockerfile -t qwen3-vl-api .
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

COPY requirements-api.txt ./
RUN pip install -r requirements-api.txt

COPY shared/ shared/
COPY api/ api/

RUN useradd --create-home --uid 10001 app
USER app

EXPOSE 3000
CMD ["python", "-m", "api"]
