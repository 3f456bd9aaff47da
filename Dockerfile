# The callbridge engine as an image (docs/DEPLOY.md). `callbridge serve` reads every setting from
# CALLBRIDGE_* variables (README, Configuration).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine engine
COPY media media
COPY adapters adapters
COPY benchmarks benchmarks
RUN pip install --no-cache-dir .
# 8080: the HTTP API, provider webhooks and the console; 8081: provider media (CALLBRIDGE_MEDIA_PORT).
EXPOSE 8080 8081
USER nobody
CMD ["callbridge", "serve"]
