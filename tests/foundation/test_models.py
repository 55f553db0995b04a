import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from chatplatform.faq.models import FAQ, FAQVariant
from chatplatform.tenants.models import Site

pytestmark = pytest.mark.django_db


def test_widget_keys_are_unique_and_unguessable() -> None:
    keys = {Site.objects.create(name=f"s{i}").widget_key for i in range(20)}
    assert len(keys) == 20
    assert all(key.startswith("pk_") and len(key) >= 32 for key in keys)


def test_site_allows_only_its_origins() -> None:
    site = Site.objects.create(name="shop", allowed_origins=["https://shop.example"])
    assert site.allows_origin("https://shop.example")
    assert site.allows_origin("https://SHOP.example/")
    assert not site.allows_origin("https://evil.example")
    assert not site.allows_origin("http://shop.example")
    assert not site.allows_origin(None)


@pytest.mark.parametrize("origins", [["shop.example"], ["https://shop.example/path"], "x"])
def test_site_rejects_malformed_origins(origins) -> None:
    site = Site(name="shop", allowed_origins=origins)
    with pytest.raises(ValidationError):
        site.full_clean()


def test_faq_version_increments_on_every_save() -> None:
    faq = FAQ.objects.create(site=Site.objects.create(name="s"), question="q?", answer="a")
    assert faq.version == 1
    faq.answer = "b"
    faq.save()
    faq.save()
    assert faq.version == 3
    assert FAQ.objects.get(pk=faq.pk).version == 3


def test_phrasings_lists_canonical_question_first() -> None:
    faq = FAQ.objects.create(site=Site.objects.create(name="s"), question="q?", answer="a")
    FAQVariant.objects.create(faq=faq, text="v1")
    FAQVariant.objects.create(faq=faq, text="v2")
    assert faq.phrasings() == ["q?", "v1", "v2"]


def test_demo_site_is_idempotent_and_rich_enough() -> None:
    call_command("load_demo_site")
    call_command("load_demo_site")
    site = Site.objects.get()
    faqs = FAQ.objects.filter(site=site)
    assert faqs.count() >= 40
    assert all(faq.variants.count() >= 2 for faq in faqs)
    assert site.allows_origin("http://127.0.0.1:8000")
