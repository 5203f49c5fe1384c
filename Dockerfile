# The runtime image: the CLI with every built-in provider, run as a non-root user on a
# read-only root filesystem.
#   docker build -t endpoints-sync:0.1.0 .
# tests/test_image.py runs this build stage's COPY and RUN steps in a fresh venv (no Docker
# engine needed), so keep them plain: paths /src, /wheels, /opt/endpoints-sync.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY syncer ./syncer
COPY providers ./providers
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .
# A venv, so that the final stage copies one folder and nothing of pip's build tooling.
RUN python -m venv /opt/endpoints-sync
# Every built-in provider: extras `all`. (`set --` expands the wheel's name for "$1[all]".)
RUN set -- /wheels/endpoints_sync-*.whl && \
    /opt/endpoints-sync/bin/python -m pip install --no-cache-dir "$1[all]"

# Same base as the build stage (the venv points at its interpreter); no compilers.
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="endpoints-sync" \
      org.opencontainers.image.description="Sync external backends into Kubernetes Services, EndpointSlices and Endpoints" \
      org.opencontainers.image.source="https://github.com/endpoints-sync/endpoints-sync" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/endpoints-sync /opt/endpoints-sync
# Bytecode was compiled at install time; at run time nothing is written outside /tmp (an
# emptyDir in deploy/), so readOnlyRootFilesystem works.
ENV PATH=/opt/endpoints-sync/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ENDPOINTS_SYNC_CONFIG=/etc/endpoints-sync/config.yaml
WORKDIR /tmp
# Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
ENTRYPOINT ["endpoints-sync"]
CMD ["run"]
