# One image per service, built from the lockfile:
#   docker build --build-arg SERVICE=users -t siteview-users .
# The image runs either process type: `siteview-users api` or `siteview-users worker`
# (the gateway, SERVICE=webhooks, has one). The development stack is never installed.
FROM python:3.11-slim AS build
RUN pip install --no-cache-dir uv==0.13.8
WORKDIR /src
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
COPY pyproject.toml uv.lock ./
COPY libs libs
COPY services services
# Declared only here, so that every layer above is one, shared by all the service images.
ARG SERVICE
RUN uv sync --frozen --no-dev --no-editable --package "siteview-${SERVICE}" --python /usr/local/bin/python3

FROM python:3.11-slim
ARG SERVICE
ENV PATH=/src/.venv/bin:$PATH APP_ENV=production PYTHONUNBUFFERED=1 SERVICE=${SERVICE}
COPY --from=build /src/.venv /src/.venv
USER 10001
ENTRYPOINT ["/bin/sh", "-c", "exec siteview-${SERVICE} \"$@\"", "--"]
