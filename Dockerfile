# One image for every role (web, CPU worker, GPU inference worker); docker-compose.yml picks the
# command. On PyPI, torch==2.13.0 for Linux x86_64 is the CUDA build, which the GPU worker needs.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    DJANGO_SETTINGS_MODULE=chatplatform.settings.production \
    VAR_DIR=/var/lib/chatplatform

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
RUN useradd --system --home /app chatplatform \
    && mkdir -p /var/lib/chatplatform && chown chatplatform /var/lib/chatplatform \
    && SECRET_KEY=build-only-build-only-build-only-build DEBUG=false \
       python manage.py collectstatic --noinput
USER chatplatform
EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "chatplatform.asgi:application"]
