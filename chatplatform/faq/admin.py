from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from import_export.admin import ImportExportModelAdmin

from chatplatform.faq.models import FAQ, FAQVariant
from chatplatform.faq.resources import FAQResource


class FAQVariantInline(admin.TabularInline):
    model = FAQVariant
    extra = 2

    def get_extra(self, request: HttpRequest, obj: FAQ | None = None, **kwargs) -> int:
        # Room for the phrasings the dashboard's "create FAQ" link prefills (?variant=...).
        return max(self.extra, len(request.GET.getlist("variant")))


@admin.register(FAQ)
class FAQAdmin(ImportExportModelAdmin):
    resource_classes = [FAQResource]
    list_display = [
        "question",
        "site",
        "is_active",
        "version",
        "variant_count",
        "updated_at",
    ]
    list_filter = ["site", "is_active", "updated_at"]
    search_fields = ["question", "answer", "variants__text"]
    readonly_fields = ["version", "created_at", "updated_at"]
    inlines = [FAQVariantInline]
    actions = ["activate", "deactivate"]
    list_select_related = ["site"]

    def get_formset_kwargs(
        self, request: HttpRequest, obj: FAQ, inline: admin.options.InlineModelAdmin, prefix: str
    ) -> dict:
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)
        # The add form takes question/answer/site from the URL (Django does that); the
        # dashboard's "create FAQ" link also passes the missed phrasings as ?variant=...
        if request.method == "GET" and obj.pk is None and isinstance(inline, FAQVariantInline):
            kwargs["initial"] = [{"text": text} for text in request.GET.getlist("variant")]
        return kwargs

    # django-import-export lets every staff user import and export unless a permission code is
    # configured: a dashboard-only staff user could rewrite any site's answers from a CSV.
    def has_import_permission(self, request: HttpRequest) -> bool:
        return self.has_add_permission(request) and self.has_change_permission(request)

    def has_export_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def get_queryset(self, request: HttpRequest) -> QuerySet[FAQ]:
        return super().get_queryset(request).prefetch_related("variants")

    @admin.display(description="phrasings")
    def variant_count(self, faq: FAQ) -> int:
        return len(faq.variants.all())

    @admin.action(description="Activate selected FAQs")
    def activate(self, request: HttpRequest, queryset: QuerySet[FAQ]) -> None:
        self._set_active(request, queryset, True)

    @admin.action(description="Deactivate selected FAQs")
    def deactivate(self, request: HttpRequest, queryset: QuerySet[FAQ]) -> None:
        self._set_active(request, queryset, False)

    def _set_active(self, request: HttpRequest, queryset: QuerySet[FAQ], active: bool) -> None:
        # Save one by one (not queryset.update) so versions bump and signals refresh the cache.
        changed = 0
        for faq in queryset:
            if faq.is_active != active:
                faq.is_active = active
                faq.save()
                changed += 1
        self.message_user(request, f"{changed} FAQ(s) updated.", messages.SUCCESS)
