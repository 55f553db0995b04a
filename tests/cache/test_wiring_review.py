"""Code paths of the Django wiring that bypass save()/delete() signals or race: bulk writes
(QuerySet.update, bulk_update, bulk_create), a promote submitted twice, the permission a
promote needs, and a sync that meets a Redis error after the database committed."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models.signals import post_save, pre_save
from django.test import Client

from chatplatform.faq.models import FAQ, FAQVariant
from chatplatform.semanticcache import signals
from chatplatform.semanticcache.service import get_cache
from chatplatform.tenants.models import Site
from tests.cache.test_django_wiring import admin_client, clean_cache  # noqa: F401 - fixtures

pytestmark = [pytest.mark.django_db, pytest.mark.slow]  # loads the embedding model

QUESTION = "Do you ship abroad?"


def served_faq(capture_on_commit: Callable) -> tuple[Site, FAQ]:
    """A site with one FAQ (QUESTION -> "Yes, to 40."), committed and synced to the cache."""
    with capture_on_commit(execute=True):
        site = Site.objects.create(name="shop")
        faq = FAQ.objects.create(site=site, question=QUESTION, answer="Yes, to 40.")
    return site, faq


def served_answer(site: Site, question: str = QUESTION) -> str | None:
    return get_cache().lookup(str(site.pk), question).answer


def test_queryset_update_reaches_the_cache(
    clean_cache: None,  # noqa: F811
    django_capture_on_commit_callbacks: Callable,
) -> None:
    # given: a served FAQ
    site, faq = served_faq(django_capture_on_commit_callbacks)
    assert served_answer(site) == "Yes, to 40."
    # when: its answer changes by a queryset update (no save(), no post_save)
    with django_capture_on_commit_callbacks(execute=True):
        assert FAQ.objects.filter(site=site).update(answer="Yes, to 50.") == 1
    # then: the new answer is served, under a new version
    assert served_answer(site) == "Yes, to 50."
    faq.refresh_from_db()
    assert faq.version == 2
    # when: bulk_update (which runs update() per batch) changes it again
    faq.answer = "Yes, to 60."
    with django_capture_on_commit_callbacks(execute=True):
        FAQ.objects.bulk_update([faq], ["answer"])
    assert served_answer(site) == "Yes, to 60."
    # when: a queryset update deactivates it; then: no longer served
    with django_capture_on_commit_callbacks(execute=True):
        FAQ.objects.filter(pk=faq.pk).update(is_active=False)
    assert served_answer(site) is None


def test_queryset_update_moving_faqs_to_another_site(
    clean_cache: None,  # noqa: F811
    django_capture_on_commit_callbacks: Callable,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        old, new = Site.objects.create(name="old"), Site.objects.create(name="new")
        faq = FAQ.objects.create(site=old, question=QUESTION, answer="Yes, to 40.")
    assert served_answer(old) == "Yes, to 40."
    with django_capture_on_commit_callbacks(execute=True):
        FAQ.objects.filter(site=old).update(site=new)
    assert served_answer(new) == "Yes, to 40."
    assert served_answer(old) is None
    assert get_cache().get_entry(f"{old.pk}:faq:{faq.pk}") is None


def test_bulk_created_faqs_and_variants_are_served(
    clean_cache: None,  # noqa: F811
    django_capture_on_commit_callbacks: Callable,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        site = Site.objects.create(name="shop")
        [faq] = FAQ.objects.bulk_create([FAQ(site=site, question=QUESTION, answer="Yes.")])
    assert served_answer(site) == "Yes."
    # a phrasing nothing like the question: served only once the entry carries it
    phrasing = "Is there a store in Berlin where I can pick up parcels?"
    assert served_answer(site, phrasing) is None
    with django_capture_on_commit_callbacks(execute=True):
        FAQVariant.objects.bulk_create([FAQVariant(faq=faq, text=phrasing)])
    assert served_answer(site, phrasing) == "Yes."
    # and a variant's text changed by a queryset update
    other = "Can I collect my order at your warehouse in Hamburg?"
    with django_capture_on_commit_callbacks(execute=True):
        FAQVariant.objects.filter(faq=faq).update(text=other)
    assert served_answer(site, other) == "Yes."
    assert served_answer(site, phrasing) is None
    # and a variant moved to another FAQ by a queryset update
    with django_capture_on_commit_callbacks(execute=True):
        card = FAQ.objects.create(site=site, question="Can I pay by card?", answer="Yes, Visa.")
    with django_capture_on_commit_callbacks(execute=True):
        FAQVariant.objects.filter(faq=faq).update(faq=card)
    assert served_answer(site, other) == "Yes, Visa."


def offer_one(site: Site) -> str:
    cache = get_cache()
    cache.offer_generated(str(site.pk), "Do you gift wrap?", "Yes, 3 euros.", "v1", first_turn=True)
    [entry] = cache.list_generated(str(site.pk))
    return entry.entry_id


def test_promote_submitted_twice_makes_one_faq(
    clean_cache: None,  # noqa: F811
    admin_client: Client,  # noqa: F811
    django_capture_on_commit_callbacks: Callable,
) -> None:
    # given: a generated entry
    site = Site.objects.create(name="shop")
    entry_id = offer_one(site)
    promote = {"entry_id": entry_id, "action": "promote"}
    second: list[Any] = []

    def submit_again(sender: type[FAQ], instance: FAQ, **kwargs: Any) -> None:
        # The second submit arrives while the first is writing its FAQ.
        if not second:
            second.append(None)
            second[0] = admin_client.post("/cache/entries/action/", promote)

    # when: the admin's double click sends the promote twice, the second mid-way
    pre_save.connect(submit_again, sender=FAQ, dispatch_uid="test_submit_again")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            first = admin_client.post("/cache/entries/action/", promote)
    finally:
        pre_save.disconnect(sender=FAQ, dispatch_uid="test_submit_again")
    # then: one FAQ, served as an FAQ; the generated entry is gone
    assert first.status_code == 302 and second[0].status_code == 302
    [faq] = FAQ.objects.filter(site=site)
    assert first.url == f"/admin/faq/faq/{faq.pk}/change/"
    assert get_cache().lookup(str(site.pk), "Do you gift wrap?").faq_id == faq.pk
    assert get_cache().list_generated(str(site.pk)) == []


def test_promote_whose_entry_removal_meets_a_redis_error(
    clean_cache: None,  # noqa: F811
    admin_client: Client,  # noqa: F811
    django_capture_on_commit_callbacks: Callable,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chatplatform.semanticcache import views

    monkeypatch.setattr(views, "PROMOTE_CLAIM_S", 1)
    site = Site.objects.create(name="shop")
    entry_id = offer_one(site)
    promote = {"entry_id": entry_id, "action": "promote"}
    pool = get_cache().redis.connection_pool
    port = pool.connection_kwargs["port"]

    def lose_redis(sender: type[FAQ], **kwargs: Any) -> None:
        point_pool_at(pool, free_port())  # Redis goes away once the FAQ is written

    # when: Redis goes away while the promote writes its FAQ
    post_save.connect(lose_redis, sender=FAQ, dispatch_uid="test_lose_redis")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            try:
                first = admin_client.post("/cache/entries/action/", promote)
            finally:
                post_save.disconnect(sender=FAQ, dispatch_uid="test_lose_redis")
                point_pool_at(pool, port)
    finally:
        point_pool_at(pool, port)
    # then: the admin lands on the new FAQ, told the generated entry is still there
    [faq] = FAQ.objects.filter(site=site)
    assert first.status_code == 302 and first.url == f"/admin/faq/faq/{faq.pk}/change/"
    assert get_cache().get_entry(entry_id) is not None
    # when: they promote it again once the claim lapsed; then: no second FAQ, entry gone
    time.sleep(1.2)
    with django_capture_on_commit_callbacks(execute=True):
        again = admin_client.post("/cache/entries/action/", promote)
    assert again.status_code == 302 and again.url == first.url
    assert FAQ.objects.filter(site=site).count() == 1
    assert get_cache().get_entry(entry_id) is None
    assert get_cache().lookup(str(site.pk), "Do you gift wrap?").faq_id == faq.pk


def test_promote_needs_the_add_faq_permission(clean_cache: None) -> None:  # noqa: F811
    # given: staff who may read the site and change (not add) FAQs
    from chatplatform.dashboards.models import SiteAccess

    site = Site.objects.create(name="shop")
    user = User.objects.create_user("ann", "ann@example.com", "pw-for-tests", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="change_faq"))
    SiteAccess.objects.create(user=user, site=site)
    client = Client()
    assert client.login(username="ann", password="pw-for-tests")
    entry_id = offer_one(site)
    # when: they promote; then: refused, nothing created, the entry kept
    response = client.post("/cache/entries/action/", {"entry_id": entry_id, "action": "promote"})
    assert response.status_code == 403
    assert not FAQ.objects.filter(site=site).exists()
    assert get_cache().get_entry(entry_id) is not None


def point_pool_at(pool: redis.ConnectionPool, port: int) -> None:
    """New connections of `pool` go to `port`; its current ones are dropped."""
    pool.connection_kwargs["port"] = port
    pool.disconnect()
    pool.reset()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.django_db(transaction=True)  # the retry runs in a thread: it reads committed rows
def test_a_sync_that_meets_a_redis_error_is_retried(
    clean_cache: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given: a served FAQ
    site = Site.objects.create(name="shop")
    faq = FAQ.objects.create(site=site, question=QUESTION, answer="Yes, to 40.")
    cache = get_cache()
    entry_id = f"{site.pk}:faq:{faq.pk}"
    assert cache.get_entry(entry_id) is not None
    monkeypatch.setattr(signals, "RETRY_DELAYS_S", (0.5, 0.5, 0.5, 0.5))
    # when: Redis is unreachable from this process as the admin deactivates it (the
    # connection pool points at a port nothing listens on; a real refused connection)
    pool = cache.redis.connection_pool
    port = pool.connection_kwargs["port"]
    point_pool_at(pool, free_port())
    try:
        with pytest.raises(redis.ConnectionError):
            cache.redis.ping()
        faq.is_active = False
        faq.save()  # autocommit: the on_commit sync runs now, and fails
    finally:
        point_pool_at(pool, port)
    assert FAQ.objects.get(pk=faq.pk).is_active is False  # the admin's save stands
    # then: once Redis answers again, the entry is removed (no rebuild command needed)
    deadline = time.monotonic() + 5
    while cache.get_entry(entry_id) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cache.get_entry(entry_id) is None
    assert not cache.lookup(str(site.pk), QUESTION).hit


def test_csv_import_reaches_the_cache_and_a_dry_run_does_not(
    clean_cache: None,  # noqa: F811
    django_capture_on_commit_callbacks: Callable,
) -> None:
    import tablib

    from chatplatform.faq.resources import FAQResource

    site, faq = served_faq(django_capture_on_commit_callbacks)
    phrasing = "Is there a store in Berlin where I can pick up parcels?"
    headers = ["id", "site", "question", "answer", "is_active", "variants"]
    rows = [
        (faq.pk, "shop", QUESTION, "Yes, to 50.", 1, phrasing),
        ("", "shop", "Can I pay by card?", "Yes, Visa.", 1, ""),
    ]
    # a dry run (the import's preview) changes nothing
    with django_capture_on_commit_callbacks(execute=True):
        result = FAQResource().import_data(tablib.Dataset(*rows, headers=headers), dry_run=True)
    assert not result.has_errors()
    assert served_answer(site) == "Yes, to 40." and served_answer(site, phrasing) is None
    # the confirmed import is served: the edited answer, its phrasing, the new FAQ
    with django_capture_on_commit_callbacks(execute=True):
        result = FAQResource().import_data(tablib.Dataset(*rows, headers=headers))
    assert not result.has_errors()
    assert served_answer(site) == "Yes, to 50."
    assert served_answer(site, phrasing) == "Yes, to 50."
    assert served_answer(site, "Can I pay by card?") == "Yes, Visa."


def test_cache_pages_escape_customer_text_and_need_csrf(clean_cache: None) -> None:  # noqa: F811
    site = Site.objects.create(name="shop")
    script = "<script>alert(1)</script> do you gift wrap?"
    get_cache().offer_generated(str(site.pk), script, "<b>Yes</b>", "v1", first_turn=True)
    [entry] = get_cache().list_generated(str(site.pk))
    User.objects.create_superuser("boss", "boss@example.com", "pw-for-tests")
    client = Client(enforce_csrf_checks=True)
    assert client.login(username="boss", password="pw-for-tests")
    page = client.get(f"/cache/sites/{site.pk}/generated/")
    assert page.status_code == 200
    assert b"<script>alert(1)" not in page.content and b"&lt;script&gt;" in page.content
    assert b"<b>Yes</b>" not in page.content
    # a forged form (no CSRF token) changes nothing
    response = client.post(
        "/cache/entries/action/", {"entry_id": entry.entry_id, "action": "delete"}
    )
    assert response.status_code == 403
    assert get_cache().get_entry(entry.entry_id) is not None


def test_csv_import_of_an_faq_id_this_database_lacks(
    clean_cache: None,  # noqa: F811
    django_capture_on_commit_callbacks: Callable,
) -> None:
    """An export from another installation (or of an FAQ deleted since) carries ids this
    database does not have: those rows are created, not refused."""
    import tablib

    from chatplatform.faq.resources import FAQResource

    with django_capture_on_commit_callbacks(execute=True):
        site = Site.objects.create(name="shop")
    headers = ["id", "site", "question", "answer", "is_active", "variants"]
    dataset = tablib.Dataset((4242, "shop", QUESTION, "Yes, to 40.", 1, ""), headers=headers)
    with django_capture_on_commit_callbacks(execute=True):
        result = FAQResource().import_data(dataset)
    assert not result.has_errors(), [e.error for row in result.rows for e in row.errors]
    faq = FAQ.objects.get(pk=4242)
    assert faq.site == site and faq.version == 1
    assert get_cache().lookup(str(site.pk), QUESTION).faq_id == 4242
    # and a later import of the same row is an edit: a new version, the new answer served
    dataset = tablib.Dataset((4242, "shop", QUESTION, "Yes, to 50.", 1, ""), headers=headers)
    with django_capture_on_commit_callbacks(execute=True):
        assert not FAQResource().import_data(dataset).has_errors()
    faq.refresh_from_db()
    assert faq.version == 2 and served_answer(site) == "Yes, to 50."


def test_faq_import_and_export_need_faq_permissions(clean_cache: None) -> None:  # noqa: F811
    # given: a staff user who may read a site's dashboard, with no FAQ permission
    from chatplatform.dashboards.models import SiteAccess

    site = Site.objects.create(name="shop")
    faq = FAQ.objects.create(site=site, question=QUESTION, answer="Yes, to 40.")
    user = User.objects.create_user("ann", "ann@example.com", "pw-for-tests", is_staff=True)
    SiteAccess.objects.create(user=user, site=site)
    client = Client()
    assert client.login(username="ann", password="pw-for-tests")
    # then: neither the import nor the export is open to them
    assert client.get("/admin/faq/faq/import/").status_code == 403
    assert client.get("/admin/faq/faq/export/").status_code == 403
    csv = f"id,site,question,answer,is_active,variants\n{faq.pk},shop,{QUESTION},Pwned.,1,\n"
    upload = SimpleUploadedFile("faqs.csv", csv.encode(), content_type="text/csv")
    response = client.post("/admin/faq/faq/import/", {"format": "0", "import_file": upload})
    assert response.status_code == 403
    faq.refresh_from_db()
    assert faq.answer == "Yes, to 40."
    # while a user with the add and change permissions may import
    for codename in ("add_faq", "change_faq", "view_faq"):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    assert client.get("/admin/faq/faq/import/").status_code == 200
    assert client.get("/admin/faq/faq/export/").status_code == 200


def test_admin_bulk_delete_of_faqs_and_of_a_site_empty_the_cache(
    clean_cache: None,  # noqa: F811
    admin_client: Client,  # noqa: F811
    django_capture_on_commit_callbacks: Callable,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        site, other = Site.objects.create(name="shop"), Site.objects.create(name="other")
        faq = FAQ.objects.create(site=site, question=QUESTION, answer="Yes.")
        FAQ.objects.create(site=site, question="Can I pay by card?", answer="Yes, Visa.")
        FAQ.objects.create(site=other, question=QUESTION, answer="No.")
    cache = get_cache()
    offer_one(site)
    # the FAQ admin's "delete selected" (a queryset delete)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/faq/faq/",
            {"action": "delete_selected", "_selected_action": [faq.pk], "post": "yes"},
        )
    assert response.status_code == 302
    assert served_answer(site) is None and served_answer(other) == "No."
    # deleting the site in the admin forgets everything of it, and only of it
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"/admin/tenants/site/{site.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not cache.store.site_entry_ids(str(site.pk))
    assert served_answer(site, "Can I pay by card?") is None
    assert cache.list_generated(str(site.pk)) == []
    assert served_answer(other) == "No."
