"""The Django wiring: admin FAQ edits reach other processes within ~1 s, the rebuild command,
the purge action, and the cache admin pages (list, approve, promote to an FAQ)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import transaction
from django.test import Client

from chatplatform.faq.models import FAQ, FAQVariant
from chatplatform.semanticcache.service import get_cache
from chatplatform.tenants.models import Site
from tests.cache.test_processes import VISIBLE_WITHIN_S, Peer

pytestmark = [pytest.mark.django_db, pytest.mark.slow]  # loads the embedding model

DEFAULT_PREFIX = "sc1"  # what get_cache() uses (CacheConfig's default)


@pytest.fixture
def clean_cache(db: None) -> Iterator[None]:
    """The process's cache, with every site this test created forgotten afterwards.

    Site and FAQ ids are reused across tests (each test's transaction is rolled back), so a
    test must not leave entries, versions or threshold overrides behind for the next one. The
    Redis database is shared with the other suites' running workers: never flushed here.
    """
    cache = get_cache()
    cache.rebuild()
    yield
    for site_id in Site.objects.values_list("pk", flat=True):
        cache.purge_site(str(site_id))


@pytest.fixture
def admin_client() -> Client:
    User.objects.create_superuser("boss", "boss@example.com", "pw-for-tests")
    client = Client()
    assert client.login(username="boss", password="pw-for-tests")
    return client


def change_form(faq: FAQ, **changes: object) -> dict[str, object]:
    variants = list(faq.variants.all())
    data: dict[str, object] = {
        "site": faq.site_id,
        "question": faq.question,
        "answer": faq.answer,
        "is_active": "on" if faq.is_active else "",
        "variants-TOTAL_FORMS": str(len(variants)),
        "variants-INITIAL_FORMS": str(len(variants)),
        "variants-MIN_NUM_FORMS": "0",
        "variants-MAX_NUM_FORMS": "1000",
    }
    for i, variant in enumerate(variants):
        data[f"variants-{i}-id"] = variant.pk
        data[f"variants-{i}-faq"] = faq.pk
        data[f"variants-{i}-text"] = variant.text
    data.update(changes)
    if not data["is_active"]:
        del data["is_active"]
    return data


def test_admin_edit_and_deactivation_reach_another_process(
    clean_cache: None,
    admin_client: Client,
    redis_url: str,
    django_capture_on_commit_callbacks: Callable,
) -> None:
    # given: an FAQ saved through the ORM (its post-commit sync runs) and a second process
    with django_capture_on_commit_callbacks(execute=True):
        site = Site.objects.create(name="shop")
        faq = FAQ.objects.create(site=site, question="Do you ship abroad?", answer="Yes, to 40.")
        FAQVariant.objects.create(faq=faq, text="Can you deliver to other countries?")
    peer = Peer(redis_url, DEFAULT_PREFIX)
    try:
        question = "Can you deliver to other countries?"
        assert peer.ask(op="lookup", site=str(site.pk), question=question)["answer"] == (
            "Yes, to 40."
        )
        # when: an admin edits the answer in the change form
        with django_capture_on_commit_callbacks(execute=True):
            response = admin_client.post(
                f"/admin/faq/faq/{faq.pk}/change/", change_form(faq, answer="Yes, to 50.")
            )
        assert response.status_code == 302, response.content[:2000]
        # then: the other process serves the new answer within a second
        seen = peer.ask(
            op="wait", site=str(site.pk), question=question, answer="Yes, to 50.", timeout=5
        )
        assert seen["answer"] == "Yes, to 50." and seen["after_s"] < VISIBLE_WITHIN_S
        # when: the admin deactivates it; then: gone everywhere within a second
        faq.refresh_from_db()
        with django_capture_on_commit_callbacks(execute=True):
            admin_client.post(f"/admin/faq/faq/{faq.pk}/change/", change_form(faq, is_active=""))
        gone = peer.ask(op="wait", site=str(site.pk), question=question, answer=None, timeout=5)
        assert gone["answer"] is None and gone["after_s"] < VISIBLE_WITHIN_S
    finally:
        peer.close()


def test_delete_removes_and_rebuild_command_restores(
    clean_cache: None, django_capture_on_commit_callbacks: Callable
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        site = Site.objects.create(name="shop")
        faq = FAQ.objects.create(site=site, question="Do you ship abroad?", answer="Yes.")
        FAQ.objects.create(site=site, question="Can I pay by card?", answer="Yes, Visa.")
    cache = get_cache()
    assert cache.lookup(str(site.pk), "Do you ship abroad?").hit
    with django_capture_on_commit_callbacks(execute=True):
        faq.delete()
    assert not cache.lookup(str(site.pk), "Do you ship abroad?").hit
    # the cache lost the site's entries (e.g. a Redis restart): the command rebuilds them
    cache.purge_site(str(site.pk))
    assert not cache.lookup(str(site.pk), "Can I pay by card?").hit
    call_command("rebuild_semantic_cache", "--site", str(site.pk))
    assert cache.lookup(str(site.pk), "Can I pay by card?").answer == "Yes, Visa."


def test_site_threshold_override_is_applied(
    clean_cache: None, django_capture_on_commit_callbacks: Callable
) -> None:
    # A close paraphrase: on a one-FAQ site a looser one ("Can you deliver to other
    # countries?", cosine 0.66) falls under the decision's top-1 cosine floor.
    question = "Do you ship to other countries?"
    with django_capture_on_commit_callbacks(execute=True):
        site = Site.objects.create(name="shop")
        FAQ.objects.create(site=site, question="Do you ship abroad?", answer="Yes.")
    assert get_cache().lookup(str(site.pk), question).hit
    with django_capture_on_commit_callbacks(execute=True):
        site.cache_min_confidence = 1.0
        site.save()
    assert get_cache().lookup(str(site.pk), question).reason == "low_confidence"


def test_admin_pages_approve_promote_and_purge(
    clean_cache: None, admin_client: Client, django_capture_on_commit_callbacks: Callable
) -> None:
    # given: a pending generated answer
    site = Site.objects.create(name="shop")
    cache = get_cache()
    site_id = str(site.pk)
    assert cache.offer_generated(
        site_id, "Do you gift wrap?", "Yes, for 3 euros.", "v1", first_turn=True
    ) == ("pending")
    [entry] = cache.list_generated(site_id)
    # the list page shows it
    page = admin_client.get(f"/cache/sites/{site.pk}/generated/")
    assert page.status_code == 200 and b"Do you gift wrap?" in page.content
    assert admin_client.get("/cache/").status_code == 200
    assert admin_client.get(f"/cache/sites/{site.pk}/near-misses/").status_code == 200
    # approve: served
    admin_client.post("/cache/entries/action/", {"entry_id": entry.entry_id, "action": "approve"})
    assert cache.lookup(site_id, "Do you gift wrap?").hit
    # promote: becomes an FAQ in one step, served as an FAQ
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/cache/entries/action/", {"entry_id": entry.entry_id, "action": "promote"}
        )
    faq = FAQ.objects.get(site=site, question="Do you gift wrap?")
    assert response.status_code == 302 and response.url == f"/admin/faq/faq/{faq.pk}/change/"
    assert cache.lookup(site_id, "Do you gift wrap?").faq_id == faq.pk
    assert cache.list_generated(site_id) == []
    # the Site admin's purge action
    cache.offer_generated(site_id, "Do you sell gift cards?", "Yes, online.", "v1", first_turn=True)
    response = admin_client.post(
        "/admin/tenants/site/",
        {"action": "purge_generated_cache_entries", "_selected_action": [site.pk]},
    )
    assert response.status_code == 302
    assert cache.list_generated(site_id) == []


def test_cache_pages_need_staff(clean_cache: None) -> None:
    response = Client().get("/cache/")
    assert response.status_code == 302 and "/admin/login/" in response.url


def test_flagged_faq_entry_is_listed_and_can_be_restored(
    clean_cache: None, admin_client: Client, django_capture_on_commit_callbacks: Callable
) -> None:
    # given: an FAQ entry flagged by repeated thumbs-down
    with django_capture_on_commit_callbacks(execute=True):
        site = Site.objects.create(name="shop")
        faq = FAQ.objects.create(site=site, question="Do you ship abroad?", answer="Yes, to 40.")
    cache = get_cache()
    entry_id = cache.lookup(str(site.pk), "Do you ship abroad?").entry_id
    assert entry_id is not None
    states = [cache.record_feedback(entry_id, positive=False) for _ in range(3)]
    assert states[-1] == "flagged"
    assert not cache.lookup(str(site.pk), "Do you ship abroad?").hit
    # when: the admin opens the flagged list
    page = admin_client.get(f"/cache/sites/{site.pk}/flagged/")
    # then: the FAQ entry is there, with a link to edit the FAQ
    assert page.status_code == 200 and b"Do you ship abroad?" in page.content
    assert f"/admin/faq/faq/{faq.pk}/change/".encode() in page.content
    assert b">1</a>" in admin_client.get("/cache/").content  # the overview counts it
    # when: the admin restores it; then: served again, with a clean slate
    response = admin_client.post(
        "/cache/entries/action/", {"entry_id": entry_id, "action": "restore"}
    )
    assert response.status_code == 302
    result = cache.lookup(str(site.pk), "Do you ship abroad?")
    assert result.hit and result.answer == "Yes, to 40."
    assert cache.list_flagged(str(site.pk)) == []
    assert not cache.get_entry(entry_id).demoted  # type: ignore[union-attr]


def test_cache_pages_show_only_the_users_sites(clean_cache: None) -> None:
    # given: a staff user who may read (and change FAQs of) site "mine" only
    from django.contrib.auth.models import Permission

    from chatplatform.dashboards.models import SiteAccess

    mine, theirs = Site.objects.create(name="mine"), Site.objects.create(name="theirs")
    user = User.objects.create_user("ann", "ann@example.com", "pw-for-tests", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="change_faq"))
    SiteAccess.objects.create(user=user, site=mine)
    client = Client()
    assert client.login(username="ann", password="pw-for-tests")
    cache = get_cache()
    cache.offer_generated(str(theirs.pk), "Do you gift wrap?", "Yes.", "v1", first_turn=True)
    [entry] = cache.list_generated(str(theirs.pk))
    # when / then: the overview lists only "mine"
    overview = client.get("/cache/")
    assert overview.status_code == 200
    assert b"mine" in overview.content and b"theirs" not in overview.content
    # the other site's pages and entries are not found
    assert client.get(f"/cache/sites/{mine.pk}/generated/").status_code == 200
    for page in ("generated", "flagged", "near-misses"):
        assert client.get(f"/cache/sites/{theirs.pk}/{page}/").status_code == 404
    for action in ("approve", "delete", "restore"):
        response = client.post(
            "/cache/entries/action/", {"entry_id": entry.entry_id, "action": action}
        )
        assert response.status_code == 404
    assert cache.get_entry(entry.entry_id).state == "pending"  # type: ignore[union-attr]


def test_moving_an_faq_to_another_site_removes_it_from_the_old_one(
    clean_cache: None, admin_client: Client, django_capture_on_commit_callbacks: Callable
) -> None:
    # given: an FAQ served on site "old"
    with django_capture_on_commit_callbacks(execute=True):
        old, new = Site.objects.create(name="old"), Site.objects.create(name="new")
        faq = FAQ.objects.create(site=old, question="Do you ship abroad?", answer="Yes, to 40.")
    cache = get_cache()
    assert cache.lookup(str(old.pk), "Do you ship abroad?").hit
    # when: an admin moves it to site "new" in the change form
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"/admin/faq/faq/{faq.pk}/change/", change_form(faq, site=new.pk)
        )
    assert response.status_code == 302, response.content[:2000]
    # then: served on the new site only
    assert cache.lookup(str(new.pk), "Do you ship abroad?").answer == "Yes, to 40."
    assert not cache.lookup(str(old.pk), "Do you ship abroad?").hit
    assert cache.get_entry(f"{old.pk}:faq:{faq.pk}") is None


def test_an_edit_after_a_rolled_back_one_still_reaches_the_cache(
    clean_cache: None, django_capture_on_commit_callbacks: Callable
) -> None:
    # given: a served FAQ
    with django_capture_on_commit_callbacks(execute=True):
        site = Site.objects.create(name="shop")
        faq = FAQ.objects.create(site=site, question="Do you ship abroad?", answer="Yes, to 40.")
    with django_capture_on_commit_callbacks(execute=True):
        # when: an edit is rolled back, then another edit on the same connection commits
        with pytest.raises(RuntimeError), transaction.atomic():
            faq.answer = "Rolled back."
            faq.save()
            raise RuntimeError("abort the edit")
        faq.refresh_from_db()
        faq.answer = "Yes, to 50."
        faq.save()
    # then: the committed edit is served
    assert get_cache().lookup(str(site.pk), "Do you ship abroad?").answer == "Yes, to 50."


def test_site_threshold_must_lie_between_0_and_1(
    clean_cache: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.core.exceptions import ValidationError

    from chatplatform.semanticcache import service

    # the model refuses it (the admin form shows the error)
    site = Site.objects.create(name="shop")
    for bad in (-1.0, 1.5):
        site.cache_min_confidence = bad
        with pytest.raises(ValidationError):
            site.full_clean()
    # and so does the path that publishes it without a loaded cache
    monkeypatch.setattr(service, "_cache", None)
    with pytest.raises(ValueError, match=r"within \[0, 1\]"):
        service.set_site_policy(site.pk, -1.0)
    assert str(site.pk) not in get_cache().store.policies()
