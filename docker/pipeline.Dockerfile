# recops pipeline / training image.
#   CPU:  docker build -f docker/pipeline.Dockerfile -t recops-pipeline .
#   CUDA: docker build -f docker/pipeline.Dockerfile --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t recops-pipeline:cuda .
FROM python:3.11-slim-bookworm

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends git make \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 recops
WORKDIR /opt/recops

COPY requirements.lock pyproject.toml README.md ./
COPY src ./src
RUN grep -v '^torch==' requirements.lock > /tmp/constraints.txt \
    && pip install --extra-index-url "${TORCH_INDEX}" "torch==2.13.0" \
    && pip install -c /tmp/constraints.txt .

COPY --chown=recops:recops params.yaml dvc.yaml ./
COPY --chown=recops:recops expectations ./expectations
COPY --chown=recops:recops dags ./dags

USER recops
ENTRYPOINT ["recops"]
CMD ["--help"]
