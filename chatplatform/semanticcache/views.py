"""Admin pages of the cache: generated entries (approve, reject, delete, promote to an FAQ),
flagged entries of both kinds (restore, or edit the FAQ) and near misses. Staff only, and each
user sees only the sites the dashboards let them read (`readable_sites`): another site's page
or entry is a 404. Rendered inside the Django admin's layout."""

from __future__ import annotations

import contextlib
import logging

import redis
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_POST

from cache.ids import site_of
from cache.types import Source, State
from chatplatform.dashboards.access import readable_sites
from chatplatform.faq.models import FAQ
from chatplatform.semanticcache import phrasings
from chatplatform.semanticcache.service import get_cache
from chatplatform.suggestions import learning
from chatplatform.suggestions.models import ConfirmedPhrasing
from chatplatform.tenants.models import Site

logger = logging.getLogger(__name__)

# Actions on generated entries; "restore" (unflag) applies to flagged entries of both kinds.
GENERATED_ACTIONS = ("approve", "reject", "delete", "promote")
RESTORE = "restore"


def _readable_site(request: HttpRequest, site_id: int) -> Site:
    """The site, if this user may read it; 404 otherwise (its existence is not revealed)."""
    return get_object_or_404(readable_sites(request.user), pk=site_id)


@staff_member_required
def overview(request: HttpRequest) -> HttpResponse:
    cache = get_cache()
    rows = []
    for site in readable_sites(request.user):
        generated = cache.list_generated(str(site.pk))
        rows.append(
            {
                "site": site,
                "active": sum(g.state == State.ACTIVE for g in generated),
                "pending": sum(g.state == State.PENDING for g in generated),
                "review": sum(g.state == State.REJECTED for g in generated),
                "flagged": len(cache.list_flagged(str(site.pk))),
                "near_misses": len(cache.list_near_misses(str(site.pk))),
            }
        )
    return render(request, "semanticcache/overview.html", {"rows": rows, "title": "Semantic cache"})


@staff_member_required
def generated(request: HttpRequest, site_id: int) -> HttpResponse:
    site = _readable_site(request, site_id)
    state = request.GET.get("state") or None
    entries = get_cache().list_generated(str(site.pk), state)
    context = {
        "site": site,
        "entries": entries,
        "state": state,
        "states": [s.value for s in State],
        "title": f"Generated cache entries: {site.name}",
    }
    return render(request, "semanticcache/generated.html", context)


@staff_member_required
def flagged(request: HttpRequest, site_id: int) -> HttpResponse:
    """Entries no longer served after repeated thumbs-down, FAQ-derived ones included."""
    site = _readable_site(request, site_id)
    context = {
        "site": site,
        "entries": get_cache().list_flagged(str(site.pk)),
        "title": f"Flagged cache entries: {site.name}",
    }
    return render(request, "semanticcache/flagged.html", context)


@staff_member_required
def near_misses(request: HttpRequest, site_id: int) -> HttpResponse:
    site = _readable_site(request, site_id)
    add_url = reverse("admin:faq_faq_add")
    misses = [
        {
            "miss": miss,
            "create_faq_url": add_url
            + "?"
            + urlencode({"site": site.pk, "question": miss.question}),
        }
        for miss in get_cache().list_near_misses(str(site.pk))
    ]
    context = {
        "site": site,
        "misses": misses,
        "confirmed": learning.confirmed(site),
        "auto_added": learning.added_automatically(site),
        "title": f"Cache near misses: {site.name}",
    }
    return render(request, "semanticcache/near_misses.html", context)


CONFIRMED_ACTIONS = ("add", "dismiss", "undo")


@staff_member_required
@require_POST
def confirmed_action(request: HttpRequest, site_id: int) -> HttpResponse:
    """A question customers confirmed (by choosing the same suggested FAQ): add it as a
    phrasing of that FAQ, dismiss it, or undo a phrasing added automatically."""
    site = _readable_site(request, site_id)
    back = redirect(reverse("semanticcache:near_misses", args=[site.pk]))
    action = request.POST.get("action", "")
    phrasing_id = request.POST.get("phrasing_id", "")
    if action not in CONFIRMED_ACTIONS or not phrasing_id.isdigit():
        return HttpResponseBadRequest("unknown action, or no phrasing")
    if not request.user.has_perm("faq.change_faq"):
        return HttpResponse("You may not change this site's answers.", status=403)
    # Only a phrasing of this very site: the form's id is the client's word.
    phrasing = get_object_or_404(ConfirmedPhrasing, pk=int(phrasing_id), site=site)
    if action == "add":
        if phrasing.state != ConfirmedPhrasing.State.OPEN:
            messages.error(request, "That question was already decided.")
            return back
        learning.add_phrasing(phrasing, automatic=False)
        messages.success(request, f"Added as a phrasing of FAQ {phrasing.faq_id}.")
    else:
        learning.dismiss(phrasing)
        messages.success(request, "Undone." if action == "undo" else "Dismissed.")
    return back


@staff_member_required
@require_POST
def near_miss_action(request: HttpRequest, site_id: int) -> HttpResponse:
    """A near miss in one click: add the question as a phrasing of the FAQ it nearly matched
    (the FAQ's sync then serves it, and its paraphrases score higher), or dismiss it."""
    site = _readable_site(request, site_id)
    back = redirect(reverse("semanticcache:near_misses", args=[site.pk]))
    question = request.POST.get("question", "").strip()
    action = request.POST.get("action", "")
    if action not in ("add_phrasing", "dismiss") or not question:
        return HttpResponseBadRequest("unknown action, or no question")
    if not request.user.has_perm("faq.change_faq"):
        return HttpResponse("You may not change this site's answers.", status=403)
    if action == "add_phrasing":
        max_chars = phrasings.max_phrasing_chars()
        if len(question) > max_chars:
            messages.error(request, f"Phrasings are at most {max_chars} characters.")
            return back
        faq_id = request.POST.get("faq_id", "")
        if not faq_id.isdigit():
            return HttpResponseBadRequest("faq_id must be an FAQ's number")
        # Only an FAQ of this very site: the form's faq_id is the client's word.
        faq = get_object_or_404(FAQ, pk=int(faq_id), site=site)
        if phrasings.add_phrasing(faq, question):
            messages.success(request, f"Added as a phrasing of FAQ {faq.pk}: {faq.question}")
        else:
            messages.info(request, f"FAQ {faq.pk} already has this phrasing.")
    removed = phrasings.forget_near_misses(site, question)
    if removed is None:
        messages.warning(request, "The cache did not answer: the near miss is still listed.")
        return back
    if action == "dismiss":
        messages.success(request, f"Dismissed ({removed} listed).")
    return back


@staff_member_required
@require_POST
def entry_action(request: HttpRequest) -> HttpResponse:
    entry_id = request.POST.get("entry_id", "")
    action = request.POST.get("action", "")
    generated_action = action in GENERATED_ACTIONS and ":gen:" in entry_id
    restore_action = action == RESTORE and (":gen:" in entry_id or ":faq:" in entry_id)
    if not (generated_action or restore_action):
        return HttpResponseBadRequest("unknown action or entry")
    if not site_of(entry_id).isdigit():
        raise Http404("no such site")
    site = _readable_site(request, int(site_of(entry_id)))
    if not request.user.has_perm("faq.change_faq"):
        return HttpResponse("You may not change this site's answers.", status=403)
    cache = get_cache()
    if action == RESTORE:
        if cache.restore_entry(entry_id):
            messages.success(request, "Entry restored: it is served again.")
        else:
            messages.error(request, "That entry is no longer flagged (restored, edited or gone).")
        return redirect(reverse("semanticcache:flagged", args=[site.pk]))
    back = reverse("semanticcache:generated", args=[site.pk])
    if action == "promote":
        return _promote(request, cache, entry_id, site)
    done = {
        "approve": cache.approve_generated,
        "reject": cache.reject_generated,
        "delete": cache.delete_entry,
    }[action](entry_id)
    if done:
        messages.success(request, f"Entry {action}d.")
    else:
        messages.error(request, "That entry no longer exists (expired or purged).")
    return redirect(back)


# How long a promote may hold its claim on an entry (a crashed request's claim then lapses).
PROMOTE_CLAIM_S = 60


def _promote(request: HttpRequest, cache, entry_id: str, site: Site) -> HttpResponse:  # noqa: ANN001
    """One step: the generated answer becomes an FAQ (its question canonical), the generated
    entry goes; the FAQ's post-commit sync puts it in the cache as a trusted entry.

    A double submit (or two admins) must make one FAQ, not two: the request that claims the
    entry in Redis first promotes it; the other finds it claimed, or gone once claimed.
    """
    back = redirect(reverse("semanticcache:generated", args=[site.pk]))
    if not request.user.has_perm("faq.add_faq"):
        return HttpResponse("You may not add FAQs.", status=403)
    claim = f"{cache.config.key_prefix}:promoting:{entry_id}"
    if not cache.redis.set(claim, "1", nx=True, ex=PROMOTE_CLAIM_S):
        messages.error(request, "That entry is already being promoted.")
        return back
    try:
        # Read after claiming: an earlier promote that finished has deleted it.
        entry = cache.get_entry(entry_id)
        if entry is None or entry.source != Source.GENERATED or entry.site_id != str(site.pk):
            messages.error(request, "That entry no longer exists (promoted, expired or purged).")
            return back
        # The same FAQ again (the entry was offered anew after a promote, or survived one
        # whose removal failed) is not made twice (phrasings.new_faq).
        faq, _ = phrasings.new_faq(site, entry.questions[0], entry.answer)
        try:
            cache.delete_entry(entry_id)
        except redis.RedisError:
            logger.exception("cache: promoted entry %s not deleted", entry_id)
            messages.warning(
                request,
                "Promoted to an FAQ, but the cache did not answer: delete the generated entry "
                "from the list once it is back.",
            )
            return redirect(reverse("admin:faq_faq_change", args=[faq.pk]))
    finally:
        with contextlib.suppress(redis.RedisError):  # else it lapses after PROMOTE_CLAIM_S
            cache.redis.delete(claim)
    messages.success(request, "Promoted to an FAQ; edit it below if needed.")
    return redirect(reverse("admin:faq_faq_change", args=[faq.pk]))
