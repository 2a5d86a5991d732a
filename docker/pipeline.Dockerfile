# recops pipeline / training image: `recops <stage>` in a DVC workspace, `torchrun ... recops train`,
# and (same dependencies) the MLflow server and the init jobs of docker/docker-compose.yaml.
#
#   CPU:  docker build -f docker/pipeline.Dockerfile -t recops-pipeline .
#   CUDA: docker build -f docker/pipeline.Dockerfile -t recops-pipeline:cuda \
#           --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
#
# Build context: the repository root (.dockerignore keeps data, virtualenvs and local state out).
# Dependencies are pinned by requirements.lock; torch (pinned by TORCH_VERSION = the lock's torch pin)
# comes from TORCH_INDEX, which picks the CPU or the CUDA build. Runs as the non-root user `recops`.
# The image's workspace, /opt/recops/workspace, is a copy of the project's DVC files (mount a volume
# there to keep data/ between runs); the pristine project stays in /opt/recops/app.
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
# torch alone from the CPU / CUDA index, then the project with every other pin from the lock (from PyPI)
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" --no-deps "torch==${TORCH_VERSION}" \
    && pip install --no-cache-dir -c requirements.lock .

FROM ${PYTHON_IMAGE}
ARG GIT_COMMIT=unknown
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    RECOPS_GIT_COMMIT=${GIT_COMMIT} \
    RECOPS_HOME=/opt/recops/workspace \
    GX_ANALYTICS_ENABLED=false \
    MLFLOW_ENABLE_TELEMETRY=false \
    DO_NOT_TRACK=1
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin recops
COPY --from=build /opt/venv /opt/venv
WORKDIR /opt/recops/app
COPY params.yaml dvc.yaml .dvcignore ./
COPY .dvc/config ./.dvc/config
COPY expectations ./expectations
COPY src ./src
COPY dags ./dags
COPY docker/stack_init.py ./docker/stack_init.py
RUN python docker/stack_init.py workspace --source /opt/recops/app --target /opt/recops/workspace \
    && chown -R recops:recops /opt/recops/workspace

USER 10001:10001
WORKDIR /opt/recops/workspace
ENTRYPOINT ["recops"]
CMD ["--help"]
