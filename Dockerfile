# gasgate: one image for the gateway (gasgate run), the serial bridge (gasgate bridge) and the
# simulator (gasgate simulate), and the monitoring center (gasgate central run). Build: docker build -t gasgate .   See docs/deployment.md.

# --- build: install gasgate and its dependencies into a venv that the runtime stage copies ---
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/gasgate
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY firmware_bridge ./firmware_bridge
COPY rules ./rules
COPY central ./central
RUN /opt/gasgate/bin/pip install .

# --- runtime: no compiler, no pip cache, no source tree; a non-root user ---
FROM python:3.11-slim
# dialout: the group that owns serial devices (the bridge's receiver); compose's group_add
# passes the host's numeric gid too, which is what the kernel checks.
RUN groupadd --system --gid 10001 gasgate \
 && useradd --system --uid 10001 --gid gasgate --groups dialout \
        --home-dir /var/lib/gasgate --shell /usr/sbin/nologin gasgate \
 && install -d -o gasgate -g gasgate -m 0750 /var/lib/gasgate
COPY --from=build /opt/gasgate /opt/gasgate
ENV PATH=/opt/gasgate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GASGATE_DATA_DIR=/var/lib/gasgate
USER gasgate
WORKDIR /var/lib/gasgate
# The store (SQLite, WAL), the outbox and the telemetry spool: losing this loses alarm history.
VOLUME ["/var/lib/gasgate"]
# The gateway's HTTP API: /healthz, /readyz, /metrics.
EXPOSE 8080
# Only the gateway serves HTTP; docker-compose.yml turns this off for the bridge and simulator.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["gasgate"]
CMD ["--help"]
