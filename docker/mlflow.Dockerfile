# syntax=docker/dockerfile:1
# MLflow tracking server with the PostgreSQL driver (the upstream image lacks psycopg2) and its basic-auth app.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

RUN pip install mlflow==3.17.2 "Flask-WTF>=1.2,<2" "psycopg2-binary>=2.9,<3"

RUN groupadd --gid 10002 mlflow \
    && useradd --uid 10002 --gid mlflow --create-home --shell /usr/sbin/nologin mlflow \
    && mkdir -p /mlartifacts \
    && chown mlflow:mlflow /mlartifacts

USER mlflow
EXPOSE 5000
VOLUME ["/mlartifacts"]

ENTRYPOINT ["mlflow", "server"]
CMD ["--host", "0.0.0.0", "--port", "5000", "--artifacts-destination", "/mlartifacts"]
