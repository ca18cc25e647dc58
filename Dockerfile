# The controller's image. Today it runs `liminal validate`/`show`; later issues make `liminal serve` the default.
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 liminal
WORKDIR /app
COPY pyproject.toml README.md ./
COPY controller ./controller
COPY webhooks ./webhooks
COPY schemas ./schemas
RUN pip install --no-cache-dir . && rm -rf /root/.cache
USER liminal
WORKDIR /work
ENTRYPOINT ["liminal"]
CMD ["--help"]
