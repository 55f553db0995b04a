"""Create (or refresh) the demo online-shop site with its FAQs. Idempotent: FAQs are matched by
their canonical question, so running it twice changes nothing.

`--origins` lists the page origins the demo widget must work on (the run command passes the
ones of its HOST and PORT, so `PORT=8200 make run` serves a working widget): those missing
from the site's allowed origins are added, the others are kept.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from chatplatform.faq.demo_data import DEMO_GREETING, DEMO_ORIGINS, DEMO_SITE_NAME, FAQS
from chatplatform.faq.models import FAQ, FAQVariant
from chatplatform.tenants.models import Site, validate_origins


class Command(BaseCommand):
    help = "Create the demo shop site with its FAQs (idempotent)."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--origins",
            nargs="+",
            default=DEMO_ORIGINS,
            help="page origins the demo widget must be allowed on (scheme://host:port)",
        )

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        origins: list[str] = options["origins"]
        try:
            validate_origins(origins)
        except ValidationError as error:
            raise CommandError(f"--origins: {' '.join(error.messages)}") from None
        site, created = Site.objects.get_or_create(
            name=DEMO_SITE_NAME,
            defaults={"allowed_origins": origins, "greeting": DEMO_GREETING},
        )
        known = site.normalized_origins()
        missing = [origin for origin in origins if origin.rstrip("/").lower() not in known]
        if missing:
            site.allowed_origins = [*site.allowed_origins, *missing]
            site.save(update_fields=["allowed_origins"])
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
            f"(widget key {site.widget_key}); {added} FAQs added, {site.faqs.count()} in all; "
            f"widget allowed on {', '.join(site.allowed_origins)}"
        )
