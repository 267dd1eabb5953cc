# fleetwatch gateway — central, stateless replicas: REST/SSE/WebSocket API and the web UI (built in a Node stage).
# Build from the repository root:  docker build -f infra/docker/gateway.Dockerfile -t fleetwatch/gateway .
# Installs requirements/gateway.txt only: the locked core dependencies plus the "gateway" group of
# pyproject.toml (`make lock` writes it), every file checked against its hash.
# The web UI: npm ci from its lock file, then the Vite build. Only the output (ui/dist) goes
# into the image; Node and node_modules stay in this stage.
FROM node:20-bookworm-slim AS ui
WORKDIR /ui
COPY ui/package.json ui/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY ui/index.html ui/tsconfig.json ui/vite.config.ts ./
COPY ui/src ./src
RUN npm run build

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements/gateway.txt /src/
# --no-deps: the lock already is the whole closure, so pip resolves nothing and a package
# missing from it fails the build instead of coming in unpinned.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps -r /src/gateway.txt

FROM python:3.11-slim
RUN groupadd --system --gid 10001 fleetwatch \
 && useradd --system --uid 10001 --gid fleetwatch --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin fleetwatch
COPY --from=build /opt/venv /opt/venv
COPY libs /app/libs
COPY services/__init__.py /app/services/__init__.py
COPY services/gateway /app/services/gateway
# ui_dir (ui/dist) is relative to the repository root, which is /app here.
COPY --from=ui /ui/dist /app/ui/dist
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
