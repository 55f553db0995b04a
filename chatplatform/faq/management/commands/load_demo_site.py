"""Create (or refresh) the demo online-shop site with its FAQs. Idempotent: FAQs are matched by
their canonical question, so running it twice changes nothing."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.db import transaction

from chatplatform.faq.demo_data import DEMO_GREETING, DEMO_ORIGINS, DEMO_SITE_NAME, FAQS
from chatplatform.faq.models import FAQ, FAQVariant
from chatplatform.tenants.models import Site


class Command(BaseCommand):
    help = "Create the demo shop site with its FAQs (idempotent)."

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        site, created = Site.objects.get_or_create(
            name=DEMO_SITE_NAME,
            defaults={"allowed_origins": DEMO_ORIGINS, "greeting": DEMO_GREETING},
        )
        added = 0
        for question, answer, variants in FAQS:
            faq, faq_created = FAQ.objects.get_or_create(
                site=site, question=question, defaults={"answer": answer}
            )
            if faq_created:
                FAQVariant.objects.bulk_create([FAQVariant(faq=faq, text=v) for v in variants])
                added += 1
        self.stdout.write(
            f"demo site {'created' if created else 'present'}: {site.name} "
            f"(widget key {site.widget_key}); {added} FAQs added, {site.faqs.count()} in all"
        )
