# fleetwatch authcallout — central: admits hosts registered through the gateway (NATS auth callout).
# Build from the repository root:  docker build -f infra/docker/authcallout.Dockerfile -t fleetwatch/authcallout .
# Installs requirements/authcallout.txt only: the locked core dependencies plus the "authcallout" group of
# pyproject.toml (`make lock` writes it), every file checked against its hash.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements/authcallout.txt /src/
# --no-deps: the lock already is the whole closure, so pip resolves nothing and a package
# missing from it fails the build instead of coming in unpinned.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps -r /src/authcallout.txt

FROM python:3.11-slim
RUN groupadd --system --gid 10001 fleetwatch \
 && useradd --system --uid 10001 --gid fleetwatch --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin fleetwatch
COPY --from=build /opt/venv /opt/venv
COPY libs /app/libs
COPY services/__init__.py /app/services/__init__.py
COPY services/authcallout /app/services/authcallout
COPY infra/docker/healthcheck.py /opt/fleetwatch/healthcheck.py
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 FLEETWATCH_LOG_FORMAT=json
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "/opt/fleetwatch/healthcheck.py", "--nats"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "services.authcallout"]
