"""CSV import/export of FAQs (django-import-export). Variants travel in one column, one
phrasing per line, so a spreadsheet round-trips cleanly."""

from __future__ import annotations

from import_export import fields, resources, widgets

from chatplatform.faq.models import FAQ, FAQVariant
from chatplatform.tenants.models import Site

VARIANT_SEPARATOR = "\n"


class FAQResource(resources.ModelResource):
    site = fields.Field(
        column_name="site",
        attribute="site",
        widget=widgets.ForeignKeyWidget(Site, "name"),
    )
    variants = fields.Field(column_name="variants")

    class Meta:
        model = FAQ
        fields = ["id", "site", "question", "answer", "is_active", "variants"]
        export_order = ["id", "site", "question", "answer", "is_active", "variants"]
        skip_unchanged = False

    def dehydrate_variants(self, faq: FAQ) -> str:
        return VARIANT_SEPARATOR.join(variant.text for variant in faq.variants.all())

    def after_save_instance(self, instance: FAQ, row, **kwargs) -> None:
        if kwargs.get("dry_run"):
            return
        raw = row.get("variants") or ""
        texts = [line.strip() for line in str(raw).splitlines() if line.strip()]
        instance.variants.all().delete()
        FAQVariant.objects.bulk_create([FAQVariant(faq=instance, text=t[:500]) for t in texts])
