# One image for every imgsearch process of the production stack (docker-compose.yml): the
# Dagster code location (`dagster code-server start`), `dagster-webserver`,
# `dagster-daemon` and the search API (uvicorn). Only the command differs per service,
# as in Dagster's own Docker deployment example.
#
#   docker compose build            # or: docker build -t imgsearch .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/imgsearch

# Dependencies first (a layer that survives code edits); torch from PyTorch's CPU index,
# pinned by constraints.txt, so nothing pulls a CUDA build.
COPY pyproject.toml constraints.txt README.md ./
COPY imgsearch_pipeline ./imgsearch_pipeline
RUN pip install -c constraints.txt torch --index-url https://download.pytorch.org/whl/cpu \
 && pip install -c constraints.txt .

# The production Dagster instance (Postgres storage from the environment) and the
# workspace that points the webserver and the daemon at the code location over gRPC.
# The production profile keeps the pipeline's tables and values in the bucket
# (IMGSEARCH_HOME defaults to s3://<bucket>/<prefix> there), not in the container.
ENV DAGSTER_HOME=/opt/dagster/home \
    DAGSTER_LOGS_DIR=/opt/dagster/logs \
    IMGSEARCH_PROFILE=production
COPY deploy/dagster.yaml /opt/dagster/home/dagster.yaml
COPY deploy/workspace.yaml /opt/dagster/workspace.yaml
COPY config ./config

# Not root: one system user owns its home and Dagster's compute logs.
RUN useradd --system --uid 10001 --create-home --home-dir /home/imgsearch imgsearch \
 && mkdir -p /opt/dagster/logs \
 && chown -R imgsearch /opt/dagster/logs
USER imgsearch

EXPOSE 3000 4000 8000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "imgsearch_pipeline.definitions"]
