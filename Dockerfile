# One image for every role (API, worker, mocksource, one-shot commands); the command picks it.
# docker-compose.yml shows each role; docs/running.md explains them.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    DJANGO_SETTINGS_MODULE=config.settings.base

WORKDIR /app

RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app

# Dependencies before the code, so this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .

# Static files are part of the image. Loading the settings needs a secret and a database
# URL, but collectstatic never connects: both values are throwaways that live only in
# this step, so the image carries no secret and every container must be given its own.
RUN DJANGO_SECRET_KEY=collectstatic-only-not-a-secret \
    DATABASE_URL=postgres://build@localhost:5432/build \
    python manage.py collectstatic --noinput \
    && mkdir -p data \
    && chown app:app data

# The code stays owned by root; the app user can write only data/ (mocksource's dataset).
USER app

EXPOSE 8000

# The API. Workers, threads and the access log come from config/gunicorn.py.
CMD ["gunicorn", "--config", "config/gunicorn.py", "config.wsgi:application", "--bind", "0.0.0.0:8000"]
