# One image, two roles:
#   API:        docker run IMAGE                       (uvicorn app.main:app)
#   worker:     docker run IMAGE arq app.worker.WorkerSettings
#   migrations: docker run IMAGE alembic upgrade head  (before rolling out a new version)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    APP_ENV=production

WORKDIR /srv
COPY pyproject.toml requirements.lock ./
COPY app ./app
RUN pip install -c requirements.lock . && useradd --system --uid 10001 --no-create-home sms
COPY alembic.ini ./
COPY migrations ./migrations

USER sms
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
# X-Forwarded-For is believed only from the proxies in FORWARDED_ALLOW_IPS (uvicorn reads it;
# default 127.0.0.1): the per-IP limits of one-time codes depend on the client address.
# One process per container (scale with replicas): each process has its own Prometheus
# registry, and two behind one port would answer scrapes at random.
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--no-access-log"]
