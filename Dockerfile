FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY fleet_monitor ./fleet_monitor
RUN pip install --no-cache-dir . \
    && groupadd --system --gid 10001 fleet \
    && useradd --system --uid 10001 --gid fleet --no-create-home --shell /usr/sbin/nologin fleet \
    && mkdir /data && chown 10001:10001 /data
COPY devices.csv ./
# The durable state (journal and snapshots) lives here when FLEET_MONITOR_DATA_DIR=/data.
VOLUME ["/data"]

USER 10001:10001
EXPOSE 6733
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('FLEET_MONITOR_PORT', '6733'), timeout=2)"]
CMD ["fleet-monitor", "serve", "--host", "0.0.0.0"]
