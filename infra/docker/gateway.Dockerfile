# fleetwatch gateway — central, stateless replicas: REST/SSE/WebSocket API and the web UI.
# Build from the repository root:  docker build -f infra/docker/gateway.Dockerfile -t fleetwatch/gateway .
# Only the core dependencies and the "gateway" group of pyproject.toml are installed.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml infra/docker/requirements.py /src/
RUN python -m venv /opt/venv \
 && python /src/requirements.py gateway > /src/requirements.txt \
 && /opt/venv/bin/pip install -r /src/requirements.txt

FROM python:3.11-slim
RUN groupadd --system --gid 10001 fleetwatch \
 && useradd --system --uid 10001 --gid fleetwatch --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin fleetwatch
COPY --from=build /opt/venv /opt/venv
COPY libs /app/libs
COPY services/__init__.py /app/services/__init__.py
COPY services/gateway /app/services/gateway
COPY infra/docker/healthcheck.py /opt/fleetwatch/healthcheck.py
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 FLEETWATCH_LOG_FORMAT=json
ENV FLEETWATCH_GATEWAY_HOST=0.0.0.0 FLEETWATCH_GATEWAY_PORT=8080
EXPOSE 8080
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "/opt/fleetwatch/healthcheck.py", "--gateway", "--nats"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "services.gateway"]
