# recops Airflow image: the api-server, scheduler, dag-processor, triggerer and Celery workers of
# docker/docker-compose.yaml. Tasks run `recops <stage>` in the worker, so the project is installed
# here too (with the `celery` extra: CeleryExecutor, `airflow celery worker`).
#
#   CPU:  docker build -f docker/airflow.Dockerfile -t recops-airflow .
#   CUDA: docker build -f docker/airflow.Dockerfile -t recops-airflow:cuda \
#           --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .      (the `gpu` queue worker)
#
# Same pins and layout as pipeline.Dockerfile: requirements.lock, torch from TORCH_INDEX, the DAGs in
# /opt/recops/app/dags, the DVC workspace in /opt/recops/workspace (RECOPS_HOME), non-root user.
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
    && pip install --no-cache-dir -c requirements.lock ".[celery]"

FROM ${PYTHON_IMAGE}
ARG GIT_COMMIT=unknown
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    RECOPS_GIT_COMMIT=${GIT_COMMIT} \
    RECOPS_HOME=/opt/recops/workspace \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/recops/app/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
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
# volumes mounted on these folders start out owned by the non-root user
RUN python docker/stack_init.py workspace --source /opt/recops/app --target /opt/recops/workspace \
    && mkdir -p /opt/airflow/logs /opt/airflow/auth \
    && chown -R recops:recops /opt/recops/workspace /opt/airflow

USER 10001:10001
WORKDIR /opt/airflow
EXPOSE 8080
ENTRYPOINT ["airflow"]
CMD ["version"]
