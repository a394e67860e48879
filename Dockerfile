# authserver: a multi-stage image, run as a non-root user, with a health check.
#
#   docker build -t authserver .
#   docker run -p 8000:8000 -e AUTHSERVER_ISSUER=https://auth.example.com \
#     -e AUTHSERVER_DATABASE_URL=postgresql://... -v authserver-keys:/var/lib/authserver/keys authserver
#
# docs/deploy.md says how to run it in production (TLS at a proxy, PostgreSQL, the keys volume).
# PYTHON_IMAGE: any Debian-based image with python3 (3.11+) and its venv module.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python3 -m venv /opt/authserver
COPY pyproject.toml README.md ./
COPY authserver ./authserver
COPY templates ./templates
# A wheel install, not an editable one: the templates land in /opt/authserver/share.
RUN /opt/authserver/bin/pip install --no-cache-dir --disable-pip-version-check . \
 && /opt/authserver/bin/pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/authserver --no-create-home \
      --shell /usr/sbin/nologin authserver \
 && install -d -o authserver -g authserver -m 0750 /var/lib/authserver
COPY --from=build /opt/authserver /opt/authserver
ENV PATH=/opt/authserver/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AUTHSERVER_SERVER__HOST=0.0.0.0 \
    AUTHSERVER_SERVER__PORT=8000 \
    AUTHSERVER_KEYS_DIR=/var/lib/authserver/keys
WORKDIR /var/lib/authserver
USER authserver
# Signing keys (and the SQLite file, when no database URL is given) live here.
VOLUME ["/var/lib/authserver"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import os, sys, urllib.request; port = os.environ.get('AUTHSERVER_SERVER__PORT', '8000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status == 200 else 1)"]
# `serve` applies pending migrations to the SQLite default; with PostgreSQL run
# `docker run ... authserver migrate` once per upgrade first (docs/deploy.md).
CMD ["authserver", "serve"]
