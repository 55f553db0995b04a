"""The learning loop of did-you-mean: clicks confirm a question as a phrasing of the FAQ
chosen; the near-miss page lists what enough distinct customers confirmed, a site may add them
automatically (and undo), and bad actors cannot teach it. Real database, Redis and cache."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis as redis_lib
from django.test import Client as HttpClient
from django.utils import timezone

from chatplatform.chat.store import NewQuestion, save_questions
from chatplatform.chat.tasks import finalize_answer
from chatplatform.conversations.models import Conversation, Message
from chatplatform.faq.models import FAQ, FAQVariant
from chatplatform.metrics import GPU_SECONDS_SAVED_KEY
from chatplatform.semanticcache.service import get_cache
from chatplatform.suggestions import learning, offers
from chatplatform.suggestions.models import ConfirmedPhrasing, SuggestionOffer
from chatplatform.suggestions.shown import ShownOffer
from chatplatform.tenants.models import Site
from inference.contracts import InferenceResult
from tests.cache.test_django_wiring import admin_client, clean_cache  # noqa: F401 - fixtures
from tests.dashboards.factories import answer, conversation, question

pytestmark = [pytest.mark.django_db, pytest.mark.slow]  # loads the embedding model

QUESTION = "my package is late"


def site_with_faq(capture: Callable, **site_fields: object) -> tuple[Site, FAQ]:
    with capture(execute=True):
        site = Site.objects.create(name="Shop", **site_fields)
        faq = FAQ.objects.create(
            site=site, question="How long does shipping take?", answer="3-5 business days."
        )
    return site, faq


def click(
    site: Site,
    faq: FAQ,
    client_ip: str,
    question: str = QUESTION,
    visitor: str = "",
    vouched: bool = False,
) -> str:
    """A customer (at `client_ip`) asks `question`, is shown `faq` and chooses it."""
    conversation = Conversation.objects.create(
        site=site, visitor_id=visitor, client_ip=client_ip, visitor_verified=vouched
    )
    [(message_id, _)] = save_questions(
        [
            NewQuestion(
                site_id=site.pk,
                conversation_id=str(conversation.pk),
                client_message_id="c1",
                text=question,
                received_at=timezone.now(),
                cached=None,
                sla_ms=300,
                offer=ShownOffer("model_with_suggestions", ((faq.pk, faq.question),), False),
            )
        ]
    )
    offers.choose(str(conversation.pk), message_id, faq.pk, time.time(), 300)
    return message_id


def test_distinct_customers_confirm_a_phrasing_listed_on_the_near_miss_page(
    clean_cache: None,  # noqa: F811
    admin_client: HttpClient,  # noqa: F811
    django_capture_on_commit_callbacks: Callable,
) -> None:
    # given a site needing 3 confirmations
    site, faq = site_with_faq(django_capture_on_commit_callbacks, confirmations_needed=3)
    # when two customers choose the shipping FAQ for the question
    click(site, faq, "198.51.100.1")
    click(site, faq, "198.51.100.2", question="My package is LATE!")  # the same, normalized
    # then it is counted but not yet listed
    [phrasing] = ConfirmedPhrasing.objects.filter(site=site)
    assert phrasing.confirmers == 2 and learning.confirmed(site) == []
    # when a third does
    click(site, faq, "198.51.100.3")
    # then it is listed at the top of the near-miss page, with a one-click add
    page = admin_client.get(f"/cache/sites/{site.pk}/near-misses/").content.decode()
    assert "Confirmed by customers" in page and QUESTION in page
    assert page.index(QUESTION) < page.index("Near misses</h2>")
    # when the admin adds it
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            f"/cache/sites/{site.pk}/confirmed/action/",
            {"action": "add", "phrasing_id": phrasing.pk},
        )
    # then the FAQ has the phrasing and the cache answers the question by itself
    assert FAQVariant.objects.filter(faq=faq, text=QUESTION).exists()
    assert get_cache().lookup(str(site.pk), QUESTION).hit
    assert learning.confirmed(site) == []


def test_invented_visitors_from_one_address_count_once(
    clean_cache: None,  # noqa: F811
    django_capture_on_commit_callbacks: Callable,
) -> None:
    site, faq = site_with_faq(django_capture_on_commit_callbacks, confirmations_needed=2)
    # when one address clicks under five made-up visitor ids (and one IPv6 host under several
    # addresses of its /64)
    for n in range(5):
        click(site, faq, "203.0.113.9", visitor=f"v_{n}")
    for host in ("2001:db8:1:2::1", "2001:db8:1:2::ffff", "2001:db8:1:2:abcd::7"):
        click(site, faq, host)
    # then that is two customers, not eight
    [phrasing] = ConfirmedPhrasing.objects.filter(site=site)
    assert phrasing.confirmers == 2


def test_visitors_the_site_vouches_for_count_apart_behind_one_address(
    clean_cache: None,  # noqa: F811
    django_capture_on_commit_callbacks: Callable,
) -> None:
    # given two customers of the site, signed in (their ids vouched for by the site's token),
    # behind one office address
    site, faq = site_with_faq(django_capture_on_commit_callbacks, confirmations_needed=2)
    click(site, faq, "203.0.113.20", visitor="customer-1", vouched=True)
    click(site, faq, "203.0.113.20", visitor="customer-2", vouched=True)
    # then they are two customers
    [phrasing] = ConfirmedPhrasing.objects.filter(site=site)
    assert phrasing.confirmers == 2


def test_confirmations_are_rate_limited_per_address(
    clean_cache: None,  # noqa: F811
    django_capture_on_commit_callbacks: Callable,
) -> None:
    site, faq = site_with_faq(django_capture_on_commit_callbacks)
    # when one address confirms more distinct questions than the hourly limit
    for n in range(learning.CONFIRMATIONS_PER_HOUR + 3):
        click(site, faq, "203.0.113.10", question=f"parcel question number {n} please")
    # then only the first ones counted (the clicks still answered)
    counted = ConfirmedPhrasing.objects.filter(site=site, confirmers=1).count()
    assert counted == learning.CONFIRMATIONS_PER_HOUR


def test_a_question_with_personal_data_is_never_learned(
    clean_cache: None,  # noqa: F811
    django_capture_on_commit_callbacks: Callable,
) -> None:
    site, faq = site_with_faq(
        django_capture_on_commit_callbacks,
        confirmations_needed=2,
        auto_add_confirmed_phrasings=True,
    )
    question = "my package for jane@example.com is late"
    for ip in ("198.51.100.1", "198.51.100.2", "198.51.100.3"):
        click(site, faq, ip, question=question)
    assert not ConfirmedPhrasing.objects.filter(site=site).exists()
    assert not FAQVariant.objects.filter(faq=faq).exists()


def test_an_opted_in_site_adds_confirmed_phrasings_and_can_undo(
    clean_cache: None,  # noqa: F811
    admin_client: HttpClient,  # noqa: F811
    django_capture_on_commit_callbacks: Callable,
) -> None:
    # given a site that adds confirmed phrasings automatically
    site, faq = site_with_faq(
        django_capture_on_commit_callbacks,
        confirmations_needed=2,
        auto_add_confirmed_phrasings=True,
    )
    # when two customers confirm the question
    with django_capture_on_commit_callbacks(execute=True):
        click(site, faq, "198.51.100.1")
        click(site, faq, "198.51.100.2")
    # then it is a phrasing of the FAQ at once, served by the cache, and listed as added
    assert FAQVariant.objects.filter(faq=faq, text=QUESTION).exists()
    assert get_cache().lookup(str(site.pk), QUESTION).hit
    page = admin_client.get(f"/cache/sites/{site.pk}/near-misses/").content.decode()
    assert "Added automatically" in page and QUESTION in page
    # when the admin undoes it
    [phrasing] = ConfirmedPhrasing.objects.filter(site=site)
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            f"/cache/sites/{site.pk}/confirmed/action/",
            {"action": "undo", "phrasing_id": phrasing.pk},
        )
    # then the phrasing is gone, the cache no longer answers it, and it is not added again
    assert not FAQVariant.objects.filter(faq=faq, text=QUESTION).exists()
    assert not get_cache().lookup(str(site.pk), QUESTION).hit
    click(site, faq, "198.51.100.3")
    assert not FAQVariant.objects.filter(faq=faq, text=QUESTION).exists()


def test_another_sites_admin_cannot_act_on_a_phrasing(
    clean_cache: None,  # noqa: F811
    admin_client: HttpClient,  # noqa: F811
    django_capture_on_commit_callbacks: Callable,
) -> None:
    site, faq = site_with_faq(django_capture_on_commit_callbacks, confirmations_needed=2)
    click(site, faq, "198.51.100.1")
    click(site, faq, "198.51.100.2")
    [phrasing] = ConfirmedPhrasing.objects.filter(site=site)
    other = Site.objects.create(name="Other")
    response = admin_client.post(
        f"/cache/sites/{other.pk}/confirmed/action/", {"action": "add", "phrasing_id": phrasing.pk}
    )
    assert response.status_code == 404
    assert ConfirmedPhrasing.objects.get(pk=phrasing.pk).state == "open"


def test_a_cancelled_generation_credits_the_gpu_time_it_saved(
    clean_cache: None,  # noqa: F811
    django_capture_on_commit_callbacks: Callable,
    redis_url: str,
    settings,  # noqa: ANN001
) -> None:
    # given a site whose finished model answers cost 2.0 GPU seconds on average, and a click
    # while the model's answer to the question was still running
    settings.REDIS_URL = redis_url
    redis_lib.Redis.from_url(redis_url).delete(GPU_SECONDS_SAVED_KEY)
    site, faq = site_with_faq(django_capture_on_commit_callbacks)
    earlier = question(conversation(site, timezone.now()), "Earlier question", timezone.now())
    answer(earlier, "llm", ttft_ms=100, total_ms=900, sla_met=True, gpu_seconds=1.5)
    answer(earlier, "llm", ttft_ms=100, total_ms=900, sla_met=True, gpu_seconds=2.5)
    message_id = click(site, faq, "198.51.100.1")
    chat_id = str(Message.objects.get(pk=message_id).conversation_id)
    # when the worker reports the cut-short generation (0.5 s used)
    cut = InferenceResult(
        conversation_id=chat_id, message_id=message_id, site_id=str(site.pk), text="Your par",
        finish_reason="cancelled", prompt_tokens=40, completion_tokens=3, ttft_ms=150.0,
        total_ms=400.0, gpu_seconds=0.5,
    )  # fmt: skip
    finalize_answer(cut.to_dict())
    # then the choice saved 2.0 - 0.5 seconds, on its record and in the Prometheus counter
    offer = SuggestionOffer.objects.get(question_id=message_id)
    assert offer.model_cancelled and offer.gpu_seconds_saved == pytest.approx(1.5)
    saved = redis_lib.Redis.from_url(redis_url).get(GPU_SECONDS_SAVED_KEY)
    assert float(saved) == pytest.approx(1.5)
    # and the model's row is closed without a failure to report
    model = Message.objects.get(in_reply_to_id=message_id, source="llm")
    assert model.state == "failed" and model.delivered


def test_a_generation_that_finished_first_saved_nothing(
    clean_cache: None,  # noqa: F811
    django_capture_on_commit_callbacks: Callable,
) -> None:
    site, faq = site_with_faq(django_capture_on_commit_callbacks)
    message_id = click(site, faq, "198.51.100.1")
    chat_id = str(Message.objects.get(pk=message_id).conversation_id)
    done = InferenceResult(
        conversation_id=chat_id, message_id=message_id, site_id=str(site.pk), text="Soon.",
        finish_reason="stop", prompt_tokens=40, completion_tokens=3, ttft_ms=150.0,
        total_ms=400.0, gpu_seconds=0.5,
    )  # fmt: skip
    finalize_answer(done.to_dict())
    offer = SuggestionOffer.objects.get(question_id=message_id)
    assert not offer.model_cancelled and offer.gpu_seconds_saved == 0.0


def test_the_site_admin_sets_the_suggestion_policy(
    admin_client: HttpClient,  # noqa: F811
) -> None:
    site = Site.objects.create(name="Shop")
    page = admin_client.get(f"/admin/tenants/site/{site.pk}/change/").content.decode()
    for field in ("suggestion_policy", "confirmations_needed", "auto_add_confirmed_phrasings"):
        assert f'name="{field}"' in page
    assert "suggest_first" in page and "model_only" in page
