# The callbridge engine as an image (docs/DEPLOY.md). `callbridge serve` reads every setting from
# CALLBRIDGE_* variables (README, Configuration).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine engine
COPY media media
COPY adapters adapters
COPY benchmarks benchmarks
# The media hot path compiled in place (engine/hot_path.py), so the install is an editable one
# of /app; the compiler and mypy are needed for the build only.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install --no-cache-dir -e '.[compile]' \
    && python -m engine.hot_path build \
    && rm -rf build \
    && pip uninstall -y mypy \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
# 8080: the HTTP API, provider webhooks and the console; 8081: provider media (CALLBRIDGE_MEDIA_PORT).
EXPOSE 8080 8081
USER nobody
CMD ["callbridge", "serve"]
