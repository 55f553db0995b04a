"""The inbox page and its one-click FAQ actions over HTTP: who may see them, and what each
click changes (only the user's sites, only that site's FAQs)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.test import Client as HttpClient
from django.utils import timezone

from chatplatform.agents import store
from chatplatform.chat.store import open_conversation
from chatplatform.conversations.models import Message
from chatplatform.faq.models import FAQ, FAQVariant
from tests.chat.agents_support import make_agent
from tests.chat.conftest import make_site

pytestmark = pytest.mark.django_db


def signed_in(user) -> HttpClient:  # noqa: ANN001
    http = HttpClient()
    http.force_login(user)
    return http


def faq_editor(name: str, sites: list) -> object:
    user = make_agent(name, sites)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["add_faq", "change_faq"]))
    return user


def answered_by_agent(site, question: str = "Can I pay with a gift card?"):  # noqa: ANN001
    """A conversation where the customer asked and an agent replied; (conversation, q, reply)."""
    agent = make_agent(f"holder-{site.pk}", [site])
    conversation_id, _ = open_conversation(site.pk, None, "v", None)
    asked = Message.objects.create(
        site=site, conversation_id=conversation_id, role="customer", text=question,
        received_at=timezone.now(),
    )  # fmt: skip
    store.request_handoff(site.pk, conversation_id)
    store.claim(conversation_id, agent.pk, [site.pk])
    reply, _ = store.reply(conversation_id, agent.pk, [site.pk], "a1", "Yes, at checkout.")
    return conversation_id, str(asked.pk), reply.message_id


def test_the_inbox_page_is_for_staff_only() -> None:
    site = make_site()
    assert HttpClient().get("/agents/").status_code == 302  # to the login page
    outsider = make_agent("outsider", [site], staff=False)
    assert signed_in(outsider).get("/agents/").status_code == 403
    page = signed_in(make_agent("agent", [site])).get("/agents/")
    assert page.status_code == 200 and b'id="queue"' in page.content
    assert b"no-sites" not in page.content
    assert b"no-sites" in signed_in(make_agent("no-grant", [])).get("/agents/").content


def test_reply_becomes_a_new_faq_in_one_click_and_not_twice() -> None:
    site = make_site()
    conversation_id, question_id, reply_id = answered_by_agent(site)
    http = signed_in(faq_editor("editor", [site]))
    url = f"/agents/conversations/{conversation_id}/faq/"
    form = {"action": "new_faq", "question_id": question_id, "reply_id": reply_id}
    first = http.post(url, form).json()
    assert first["ok"] and first["created"]
    faq = FAQ.objects.get(pk=first["faq_id"])
    assert (faq.site_id, faq.question, faq.answer) == (
        site.pk, "Can I pay with a gift card?", "Yes, at checkout."
    )  # fmt: skip
    again = http.post(url, form).json()
    assert again["faq_id"] == faq.pk and again["created"] is False


def test_question_becomes_a_phrasing_of_this_sites_faq_only() -> None:
    site, other = make_site(name="Shop"), make_site(name="Other shop")
    conversation_id, question_id, _ = answered_by_agent(site, "When do parcels come?")
    http = signed_in(faq_editor("editor2", [site]))
    url = f"/agents/conversations/{conversation_id}/faq/"
    own = FAQ.objects.get(site=site)
    foreign = FAQ.objects.get(site=other)
    answer = http.post(url, {"action": "add_phrasing", "question_id": question_id,
                             "faq_id": own.pk}).json()  # fmt: skip
    assert answer["ok"] and answer["created"] and answer["faq_id"] == own.pk
    assert FAQVariant.objects.filter(faq=own, text="When do parcels come?").exists()
    response = http.post(url, {"action": "add_phrasing", "question_id": question_id,
                               "faq_id": foreign.pk})  # fmt: skip
    assert response.status_code == 404
    assert not FAQVariant.objects.filter(faq=foreign, text="When do parcels come?").exists()


@pytest.mark.parametrize(
    ("form", "status"),
    [
        ({"action": "drop_table"}, 400),
        ({"action": "new_faq", "question_id": "not-a-uuid", "reply_id": "x"}, 404),
        ({"action": "add_phrasing", "question_id": "QID", "faq_id": "1; DROP"}, 400),
        ({"action": "new_faq", "question_id": "QID", "reply_id": "QID"}, 404),  # not a reply
    ],
)
def test_bad_faq_clicks_are_refused_and_change_nothing(form: dict, status: int) -> None:
    site = make_site()
    conversation_id, question_id, _ = answered_by_agent(site)
    http = signed_in(faq_editor("editor3", [site]))
    form = {k: (question_id if v == "QID" else v) for k, v in form.items()}
    faqs = FAQ.objects.count()
    response = http.post(f"/agents/conversations/{conversation_id}/faq/", form)
    assert response.status_code == status and response.json()["ok"] is False
    assert FAQ.objects.count() == faqs


def test_another_sites_conversation_and_missing_permissions_are_refused() -> None:
    site, other = make_site(name="Shop"), make_site(name="Other shop")
    conversation_id, question_id, reply_id = answered_by_agent(other)
    form = {"action": "new_faq", "question_id": question_id, "reply_id": reply_id}
    url = f"/agents/conversations/{conversation_id}/faq/"
    assert signed_in(faq_editor("editor4", [site])).post(url, form).status_code == 404
    no_perms = make_agent("agent-only", [other])
    assert signed_in(no_perms).post(url, form).status_code == 403
    options = f"/agents/conversations/{conversation_id}/questions/{question_id}/faq-options/"
    assert signed_in(faq_editor("editor5", [site])).get(options).status_code == 404
    assert FAQ.objects.filter(answer="Yes, at checkout.").count() == 0
