"""The near-miss page's one-click actions: add the question as a phrasing of the FAQ it nearly
matched (served from then on), or dismiss it. Real database, Redis and cache."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from chatplatform.faq.models import FAQ, FAQVariant
from chatplatform.semanticcache.service import get_cache
from chatplatform.tenants.models import Site
from tests.cache.test_django_wiring import admin_client, clean_cache  # noqa: F401 - fixtures

pytestmark = [pytest.mark.django_db, pytest.mark.slow]  # loads the embedding model

NEAR = "How many days does delivery usually take?"


def strict_site_with_faq(capture_on_commit: Callable, name: str = "shop") -> tuple[Site, FAQ]:
    """A site whose threshold (1.0) turns every semantic match into a near miss."""
    with capture_on_commit(execute=True):
        site = Site.objects.create(name=name, cache_min_confidence=1.0)
        faq = FAQ.objects.create(
            site=site, question="How long does delivery take?", answer="3-5 working days."
        )
    return site, faq


def record_near_miss(site: Site, question: str = NEAR) -> None:
    cache = get_cache()
    result = cache.lookup(str(site.pk), question)
    assert not result.hit and result.reason == "low_confidence"
    cache.flush()  # near misses are buffered and written by the sync thread


def action_url(site: Site) -> str:
    return f"/cache/sites/{site.pk}/near-misses/action/"


def test_adding_a_near_miss_as_a_phrasing_serves_it(
    clean_cache: None,  # noqa: F811
    admin_client: Client,  # noqa: F811
    django_capture_on_commit_callbacks: Callable,
) -> None:
    # given: a near miss of the delivery FAQ, listed with a one-click action
    site, faq = strict_site_with_faq(django_capture_on_commit_callbacks)
    record_near_miss(site)
    [miss] = get_cache().list_near_misses(str(site.pk))
    assert miss.faq_id == faq.pk
    page = admin_client.get(f"/cache/sites/{site.pk}/near-misses/")
    assert f"Add as phrasing of FAQ {faq.pk}".encode() in page.content
    # when: the admin adds it as a phrasing of that FAQ
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            action_url(site), {"action": "add_phrasing", "faq_id": faq.pk, "question": NEAR}
        )
    # then: the FAQ has the phrasing, the cache serves it, and the near miss is gone
    assert response.status_code == 302
    assert list(faq.variants.values_list("text", flat=True)) == [NEAR]
    result = get_cache().lookup(str(site.pk), NEAR)
    assert result.hit and result.answer == "3-5 working days." and result.faq_id == faq.pk
    assert get_cache().list_near_misses(str(site.pk)) == []
    # and a second click adds nothing twice
    admin_client.post(
        action_url(site), {"action": "add_phrasing", "faq_id": faq.pk, "question": NEAR}
    )
    assert faq.variants.count() == 1


def test_a_phrasing_goes_only_to_an_faq_of_the_same_site(
    clean_cache: None,  # noqa: F811
    admin_client: Client,  # noqa: F811
    django_capture_on_commit_callbacks: Callable,
) -> None:
    site, _ = strict_site_with_faq(django_capture_on_commit_callbacks)
    _, foreign = strict_site_with_faq(django_capture_on_commit_callbacks, name="other")
    record_near_miss(site)
    response = admin_client.post(
        action_url(site), {"action": "add_phrasing", "faq_id": foreign.pk, "question": NEAR}
    )
    assert response.status_code == 404
    assert not FAQVariant.objects.exists()
    assert len(get_cache().list_near_misses(str(site.pk))) == 1


def test_dismissing_removes_every_listing_of_the_question(
    clean_cache: None,  # noqa: F811
    admin_client: Client,  # noqa: F811
    django_capture_on_commit_callbacks: Callable,
) -> None:
    site, _ = strict_site_with_faq(django_capture_on_commit_callbacks)
    record_near_miss(site)
    record_near_miss(site, NEAR.upper())  # the same question, typed differently
    record_near_miss(site, "When will my order be delivered?")
    response = admin_client.post(action_url(site), {"action": "dismiss", "question": NEAR})
    assert response.status_code == 302
    left = [miss.question for miss in get_cache().list_near_misses(str(site.pk))]
    assert left == ["When will my order be delivered?"]
    assert not FAQVariant.objects.exists()


def test_near_miss_actions_need_the_change_faq_permission_and_a_known_action(
    clean_cache: None,  # noqa: F811
    admin_client: Client,  # noqa: F811
    django_capture_on_commit_callbacks: Callable,
) -> None:
    site, faq = strict_site_with_faq(django_capture_on_commit_callbacks)
    record_near_miss(site)
    bad = admin_client.post(action_url(site), {"action": "sudo", "question": NEAR})
    assert bad.status_code == 400
    for faq_id in ("", "abc", "-1"):
        malformed = admin_client.post(
            action_url(site), {"action": "add_phrasing", "faq_id": faq_id, "question": NEAR}
        )
        assert malformed.status_code == 400
    too_long = admin_client.post(
        action_url(site), {"action": "add_phrasing", "faq_id": faq.pk, "question": "x" * 501}
    )
    assert too_long.status_code == 302 and not FAQVariant.objects.exists()
    viewer = User.objects.create_user("viewer", password="pw-for-tests", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_faq"))
    site.dashboard_access.create(user=viewer)
    client = Client()
    assert client.login(username="viewer", password="pw-for-tests")
    response = client.post(
        action_url(site), {"action": "add_phrasing", "faq_id": faq.pk, "question": NEAR}
    )
    assert response.status_code == 403
    assert not FAQVariant.objects.exists()
    assert len(get_cache().list_near_misses(str(site.pk))) == 1
