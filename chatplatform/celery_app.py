"""The Celery app of the Django side: the CPU queue worker (persisting answers, metrics, cache
admission) and the client that sends inference tasks. GPU workers use `inference.worker`'s
Django-free app instead; both talk through the queue and task names in inference/contracts.py.

Start a CPU worker with: celery -A chatplatform.celery_app worker -Q cpu -n cpu@%h
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatplatform.settings.local")

app = Celery("chatplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
