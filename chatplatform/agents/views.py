"""The agent inbox page and its one-click FAQ actions.

The page itself is static HTML + inbox.js; everything live comes over the agent socket
(/ws/agent/). Access: the dashboards' rules (staff only; superusers every site, other staff the
sites granted to them), so a conversation of another site is a 404, never a hint that it exists.

The FAQ actions close the loop with the cache: an agent's answer to a question the bot missed
becomes a new FAQ, or the question becomes a phrasing of the FAQ that answers it, through the
same code as the near-miss page (semanticcache/phrasings.py).
"""

from __future__ import annotations

import uuid

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET, require_POST

from chatplatform.agents import config
from chatplatform.chat.answering import get_cache_sync
from chatplatform.chat.config import SUGGESTION_COUNT
from chatplatform.conversations.models import Message
from chatplatform.dashboards.access import readable_sites, staff_only
from chatplatform.faq.models import FAQ
from chatplatform.semanticcache import phrasings


@require_GET
@staff_only
def inbox(request: HttpRequest) -> HttpResponse:
    context = {
        "ping_ms": config.INBOX_PING_INTERVAL_S * 1000,
        "can_edit_faqs": request.user.has_perm("faq.add_faq")
        and request.user.has_perm("faq.change_faq"),
        "has_sites": readable_sites(request.user).exists(),
    }
    return render(request, "agents/inbox.html", context)


def _message(
    request: HttpRequest, conversation_id: object, message_id: object, role: str
) -> Message:
    """A message of this role in a conversation of the user's sites (404 otherwise, also for
    an id that is not a UUID)."""
    try:
        message_id = uuid.UUID(str(message_id))
    except ValueError:
        raise Http404("No such message.") from None
    return get_object_or_404(
        Message.objects.select_related("site"),
        pk=message_id,
        conversation_id=conversation_id,
        role=role,
        site__in=readable_sites(request.user),
    )


def _error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"ok": False, "error": message}, status=status)


@require_GET
@staff_only
def faq_options(
    request: HttpRequest, conversation_id: uuid.UUID, question_id: uuid.UUID
) -> JsonResponse:
    """The FAQs nearest a customer's question (the cache's own ranking), to add it to one."""
    question = _message(request, conversation_id, question_id, Message.Role.CUSTOMER)
    nearest = get_cache_sync().nearest_faqs(str(question.site_id), question.text, SUGGESTION_COUNT)
    return JsonResponse(
        {
            "question": question.text,
            "nearest": [{"faq_id": s.faq_id, "question": s.question} for s in nearest],
        }
    )


@require_POST
@staff_only
def faq_action(request: HttpRequest, conversation_id: uuid.UUID) -> JsonResponse:
    """One click: `new_faq` (the customer's question + the agent's reply) or `add_phrasing`
    (the question as a phrasing of FAQ `faq_id` of the same site). Always answers JSON."""
    try:
        return _faq_action(request, conversation_id)
    except Http404:
        return _error("No such question, reply or FAQ in your sites.", 404)


def _faq_action(request: HttpRequest, conversation_id: uuid.UUID) -> JsonResponse:
    if not (request.user.has_perm("faq.add_faq") and request.user.has_perm("faq.change_faq")):
        return _error("You may not change this site's answers.", 403)
    action = request.POST.get("action", "")
    if action not in ("new_faq", "add_phrasing"):
        return _error("action must be new_faq or add_phrasing.", 400)
    question = _message(
        request, conversation_id, request.POST.get("question_id", ""), Message.Role.CUSTOMER
    )
    site = question.site
    if action == "new_faq":
        reply = _message(
            request, conversation_id, request.POST.get("reply_id", ""), Message.Role.AGENT
        )
        faq, created = phrasings.new_faq(site, question.text, reply.text)
    else:
        faq_id = request.POST.get("faq_id", "")
        if not faq_id.isdigit():
            return _error("faq_id must be an FAQ's number.", 400)
        if len(question.text) > phrasings.max_phrasing_chars():
            return _error(f"Phrasings are at most {phrasings.max_phrasing_chars()} chars.", 400)
        faq = get_object_or_404(FAQ, pk=int(faq_id), site=site)  # only this site's FAQs
        created = phrasings.add_phrasing(faq, question.text)
    phrasings.forget_near_misses(site, question.text)
    return JsonResponse(
        {"ok": True, "faq_id": faq.pk, "faq_question": faq.question, "created": created}
    )
