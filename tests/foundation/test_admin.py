"""Django admin: sites, FAQs (search, filters, inline variants, bulk actions, CSV import and
export) and read-only conversations."""

from __future__ import annotations

import csv
import io

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client

from chatplatform.conversations.models import Conversation
from chatplatform.faq.models import FAQ
from chatplatform.tenants.models import Site

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged_in() -> Client:
    User.objects.create_superuser("boss", "boss@example.com", "pw-for-tests")
    client = Client()
    assert client.login(username="boss", password="pw-for-tests")
    return client


def test_admin_login_page_then_demo_faqs_listed(admin_client_logged_in: Client) -> None:
    # given the demo site
    call_command("load_demo_site")
    # when the admin opens the FAQ list
    response = admin_client_logged_in.get("/admin/faq/faq/")
    # then the demo FAQs are there
    assert response.status_code == 200
    assert b"How long does shipping take?" in response.content
    assert b"45 FAQs" in response.content


def test_ensure_admin_creates_a_working_login(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_PASSWORD", "local-admin-pw")
    call_command("ensure_admin")
    client = Client()
    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": "admin", "password": "local-admin-pw", "next": "/admin/"},
    )
    assert response.status_code == 302 and response.url == "/admin/"


def test_faq_search_matches_variants(admin_client_logged_in: Client) -> None:
    call_command("load_demo_site")
    response = admin_client_logged_in.get("/admin/faq/faq/", {"q": "Klarna"})
    assert b"Can I pay in instalments?" in response.content
    assert b"1 FAQ" in response.content


def test_bulk_deactivate_bumps_versions(admin_client_logged_in: Client) -> None:
    call_command("load_demo_site")
    ids = list(FAQ.objects.values_list("pk", flat=True)[:3])
    response = admin_client_logged_in.post(
        "/admin/faq/faq/", {"action": "deactivate", "_selected_action": ids}
    )
    assert response.status_code == 302
    faqs = FAQ.objects.filter(pk__in=ids)
    assert all(not faq.is_active and faq.version == 2 for faq in faqs)


def test_faq_edit_with_inline_variants(admin_client_logged_in: Client) -> None:
    site = Site.objects.create(name="shop")
    response = admin_client_logged_in.post(
        "/admin/faq/faq/add/",
        {
            "site": site.pk,
            "question": "Do you ship to Mars?",
            "answer": "Not yet.",
            "is_active": "on",
            "variants-TOTAL_FORMS": "2",
            "variants-INITIAL_FORMS": "0",
            "variants-0-text": "Can I get delivery on Mars?",
            "variants-1-text": "mars shipping",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    faq = FAQ.objects.get(question="Do you ship to Mars?")
    assert faq.phrasings() == [
        "Do you ship to Mars?",
        "Can I get delivery on Mars?",
        "mars shipping",
    ]


def test_csv_export_includes_variants(admin_client_logged_in: Client) -> None:
    call_command("load_demo_site")
    response = admin_client_logged_in.post(
        "/admin/faq/faq/export/", {"format": "0", "resource": "0", **_all_export_fields()}
    )
    assert response.status_code == 200, response.content[:500]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == 45
    shipping = next(row for row in rows if row["question"] == "How long does shipping take?")
    assert "What is the delivery time?" in shipping["variants"].splitlines()


def _all_export_fields() -> dict[str, str]:
    names = ["id", "site", "question", "answer", "is_active", "variants"]
    return {f"faqresource_{name}": "on" for name in names}


def test_csv_import_creates_faqs_with_variants(admin_client_logged_in: Client) -> None:
    Site.objects.create(name="Shop A")
    data = (
        b"id,site,question,answer,is_active,variants\r\n"
        b',Shop A,Where is my order?,Check your e-mail.,1,"Where\'s my parcel?\nOrder status"\r\n'
    )
    upload = SimpleUploadedFile("faqs.csv", data, content_type="text/csv")
    # when: upload, then confirm (django-import-export's two steps)
    response = admin_client_logged_in.post(
        "/admin/faq/faq/import/", {"format": "0", "resource": "0", "import_file": upload}
    )
    assert response.status_code == 200
    confirm = response.context["confirm_form"]
    response = admin_client_logged_in.post("/admin/faq/faq/process_import/", confirm.initial)
    assert response.status_code == 302
    faq = FAQ.objects.get(question="Where is my order?")
    assert faq.phrasings() == ["Where is my order?", "Where's my parcel?", "Order status"]


def test_conversations_are_read_only(admin_client_logged_in: Client) -> None:
    site = Site.objects.create(name="shop")
    conversation = Conversation.objects.create(site=site, visitor_id="v1")
    change_url = f"/admin/conversations/conversation/{conversation.pk}/change/"
    assert admin_client_logged_in.get(change_url).status_code == 200
    assert admin_client_logged_in.get("/admin/conversations/conversation/add/").status_code == 403
    response = admin_client_logged_in.post(change_url, {"visitor_id": "hacked"})
    assert response.status_code == 403
    conversation.refresh_from_db()
    assert conversation.visitor_id == "v1"


def test_the_admin_index_links_the_platform_pages(admin_client_logged_in: Client) -> None:
    response = admin_client_logged_in.get("/admin/")
    page = response.content.decode()
    assert response.status_code == 200
    for href in (
        'href="/dashboard/"',
        'href="/dashboard/gaps/"',
        'href="/cache/"',
        'href="/agents/"',
    ):
        assert href in page


def test_favicon_is_served() -> None:
    response = Client().get("/favicon.ico")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml"
    assert response.content.startswith(b"<svg")
