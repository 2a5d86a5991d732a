# recops serving image: `recops serve` (FastAPI / uvicorn) answering recommendations from the MLflow
# registry's champion (models:/<registry.production_model>@champion), hot-swapping new versions.
#
#   docker build -f docker/serving.Dockerfile -t recops-serving .
#   docker run -p 8000:8000 -e MLFLOW_TRACKING_URI=... -e MLFLOW_TRACKING_USERNAME=... \
#              -e MLFLOW_TRACKING_PASSWORD=... recops-serving
#
# Slim: CPU torch, no build tools, no project sources besides the installed package and params.yaml
# (the `serving:` section). Non-root; /healthz is the container health check (liveness), /readyz says
# whether a model is loaded.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /build
COPY requirements.lock pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" --no-deps "torch==${TORCH_VERSION}" \
    && pip install --no-cache-dir -c requirements.lock .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    MLFLOW_ENABLE_TELEMETRY=false \
    DO_NOT_TRACK=1
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin recops
COPY --from=build /opt/venv /opt/venv
WORKDIR /opt/recops
COPY params.yaml ./

USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["recops"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
