# Two commands matter: `make run` (the whole stack on this machine) and `make test`.
# Everything is installed into .venv from the pinned requirement files.

VENV ?= .venv
# The first interpreter on PATH that is Python 3.12 or newer.
PYTHON ?= $(shell for p in python3.13 python3.12 python3 python; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1 && { echo $$p; break; }; done)
PY := $(VENV)/bin/python

.PHONY: run test lint format check-deploy ci clean install install-dev

$(PY):
	@test -n "$(PYTHON)" || { echo "Python 3.12 or newer is needed (python3.12 or python3 on PATH)."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## make run: start the embedded database (unless DATABASE_URL is set), mocksource,
## the API under gunicorn and the worker; run a first ingestion; Ctrl-C stops all.
run: install
	$(PY) -m config.stack

## make test: the whole suite against PostgreSQL (embedded unless DATABASE_URL is set).
test: install-dev
	$(PY) -m pytest

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## Migrations in step with the models, and Django's deployment checks under production-like values.
check-deploy: install-dev
	DJANGO_DEBUG=true $(PY) manage.py makemigrations --check --dry-run
	DJANGO_DEBUG=false DJANGO_HTTPS=true DJANGO_HSTS_PRELOAD=true \
	DJANGO_SECRET_KEY=$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(50))') \
	INGESTION_SUPPRESSION_KEY=$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(50))') \
	DJANGO_ADMIN_URL=staff-console/ $(PY) manage.py check --deploy --fail-level WARNING

ci: test lint check-deploy

clean:
	rm -rf $(VENV) staticfiles
