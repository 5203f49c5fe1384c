# The runtime image: the CLI with every built-in provider, as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY syncer ./syncer
COPY providers ./providers
RUN pip install --no-cache-dir --prefix=/install '.[all]'

FROM python:3.11-slim
COPY --from=build /install /usr/local
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin sync
USER 65532:65532
ENV PYTHONUNBUFFERED=1 ENDPOINTS_SYNC_CONFIG=/etc/endpoints-sync/config.yaml
ENTRYPOINT ["endpoints-sync"]
CMD ["run"]
