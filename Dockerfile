# The controller's image: `liminal serve` by default, as a non-root user, with a health check.
# BASE_IMAGE: any Debian-based Python 3.11+ image (python:3.11-slim by default).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
# git: the git source; nothing else is needed at run time (Docker and Kubernetes are reached over their APIs)
RUN apt-get update && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --user-group liminal \
    && mkdir -p /var/lib/liminal && chown liminal:liminal /var/lib/liminal
WORKDIR /app
COPY pyproject.toml README.md ./
COPY controller ./controller
COPY webhooks ./webhooks
COPY schemas ./schemas
RUN pip install --no-cache-dir . && rm -rf /root/.cache
USER 10001:10001
ENV LIMINAL_HOME=/var/lib/liminal \
    LIMINAL_LISTEN=0.0.0.0:8080 \
    LIMINAL_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
WORKDIR /var/lib/liminal
EXPOSE 8080
# asks the port LIMINAL_LISTEN names (8080 unless changed)
HEALTHCHECK --interval=20s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; port = os.environ.get('LIMINAL_LISTEN', ':8080').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2)"]
ENTRYPOINT ["liminal"]
CMD ["serve"]
