"""Human agents over the real ASGI app, channel layer and Redis: a customer socket and agent
sockets (signed in with a real session cookie), the inbox, claim, reply, hand back, resolve and
rating, and every "bad input and faults" case of the handoff (docs/protocol.md)."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from chatplatform.agents import config as agent_config
from chatplatform.agents.models import Handoff
from chatplatform.conversations.models import Message
from tests.chat.agents_support import AgentClient, make_agent
from tests.chat.conftest import Client, make_site, queued_inference_requests

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]

FAQ_QUESTION = "How long does shipping take?"
FAQ_ANSWER = "Standard shipping takes 3-5 business days."


async def handoff_of(conversation_id: str) -> Handoff:
    return await sync_to_async(
        lambda: Handoff.objects.select_related("agent").filter(conversation_id=conversation_id)
        .order_by("-requested_at").first()
    )()  # fmt: skip


async def ask(client: Client, text: str, cid: str) -> dict:
    await client.send({"type": "message", "client_message_id": cid, "text": text})
    return await client.receive_type("ack")


async def asked_for_a_person(client: Client, site) -> str:  # noqa: ANN001 - a Site
    welcome = await client.hello(site)
    await client.send({"type": "handoff"})
    ok = await client.receive_type("handoff.ok")
    assert ok["status"] == "waiting" and ok["unavailable"] is None
    return welcome["conversation_id"]


async def test_handoff_claim_replies_both_ways_hand_back_and_the_cache_answers_again(
    client: Client, chat_cache, redis_url: str
) -> None:
    # given a site with an FAQ, its agent in the inbox, and a customer who asks for a person
    site = await sync_to_async(make_site)(name="Agents shop")
    alice = await sync_to_async(make_agent)("alice", [site], first_name="Alice")
    agent = await AgentClient.signed_in(alice)
    assert agent.inbox["conversations"] == []
    conversation_id = await asked_for_a_person(client, site)
    # then the inbox shows it live
    listed = await agent.receive_type("conversation")
    assert listed["conversation"]["conversation_id"] == conversation_id
    assert listed["conversation"]["status"] == "waiting"
    # when the agent claims it
    assert (await agent.act("claim", conversation_id))["type"] == "claim.ok"
    assert (await client.receive_type("agent.joined"))["agent_name"] == "Alice"
    await agent.send({"type": "open", "conversation_id": conversation_id})
    transcript = await agent.receive_type("transcript")
    assert transcript["conversation"]["status"] == "held"
    # and they write to each other, twice each way
    for n in (1, 2):
        ok = await agent.reply(conversation_id, f"Hello from Alice #{n}", cid=f"a{n}")
        assert ok["type"] == "reply.ok" and ok["duplicate"] is False
        got = await client.receive_type("agent.message")
        assert got["text"] == f"Hello from Alice #{n}" and got["agent_name"] == "Alice"
        assert got["message_id"] == ok["message_id"]
        question = FAQ_QUESTION if n == 1 else f"Customer says #{n}"
        await ask(client, question, cid=f"c{n}")
        assert (await agent.message_with(question))["role"] == "customer"
    # then the bot and the cache stayed silent while the agent held the chat
    assert await client.communicator.receive_nothing(timeout=0.5)
    assert queued_inference_requests(redis_url) == []
    answers = await sync_to_async(
        Message.objects.filter(conversation_id=conversation_id, role="assistant").count
    )()
    assert answers == 0
    # when the agent hands it back, the next question is answered by the cache again
    assert (await agent.act("hand_back", conversation_id))["type"] == "hand_back.ok"
    left = await client.receive_type("agent.left")
    assert left["reason"] == "handed_back"
    await ask(client, FAQ_QUESTION, cid="c3")
    answer = await client.receive_type("answer")
    assert answer["source"] == "faq" and answer["text"] == FAQ_ANSWER
    handoff = await handoff_of(conversation_id)
    assert handoff.status == "handed_back" and handoff.first_agent_reply_at is not None
    await agent.close()


async def test_resolve_then_rating_is_stored(client: Client) -> None:
    site = await sync_to_async(make_site)(cache_enabled=False)
    bob = await sync_to_async(make_agent)("bob", [site])
    agent = await AgentClient.signed_in(bob)
    conversation_id = await asked_for_a_person(client, site)
    # a rating before the resolve is refused
    await client.send({"type": "rating", "score": 5})
    assert (await client.receive_type("error"))["code"] == "not_resolved"
    await agent.act("claim", conversation_id)
    await agent.reply(conversation_id, "Done, refund issued.", cid="r1")
    assert (await agent.act("resolve", conversation_id))["type"] == "resolve.ok"
    assert (await client.receive_type("handoff.resolved"))["agent_name"] == "bob"
    # bad ratings are refused, and nothing is stored
    for bad in (
        {"score": 0},
        {"score": 6},
        {"score": True},
        {"score": "5"},
        {"score": 3, "comment": 7},
    ):
        await client.send({"type": "rating", **bad})
        assert (await client.receive_type("error"))["code"] == "bad_field"
    assert (await handoff_of(conversation_id)).rating is None
    await client.send({"type": "rating", "score": 4, "comment": "Quick and kind."})
    assert (await client.receive_type("rating.ok"))["score"] == 4
    handoff = await handoff_of(conversation_id)
    assert (handoff.status, handoff.rating, handoff.rating_comment) == (
        "resolved",
        4,
        "Quick and kind.",
    )
    assert handoff.ended_at is not None
    await agent.close()


# --- bad input and faults ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "claim", "conversation_id": "00000000-0000-0000-0000-000000000000"},
        {"type": "reply", "conversation_id": "00000000-0000-0000-0000-000000000000",
         "client_message_id": "x", "text": "I am the agent now"},
        {"type": "hand_back", "conversation_id": "00000000-0000-0000-0000-000000000000"},
        {"type": "resolve", "conversation_id": "00000000-0000-0000-0000-000000000000"},
        {"type": "open", "conversation_id": "00000000-0000-0000-0000-000000000000"},
        {"type": "typing", "conversation_id": "00000000-0000-0000-0000-000000000000"},
    ],
)  # fmt: skip
async def test_a_customer_socket_cannot_send_agent_frames(client: Client, frame: dict) -> None:
    site = await sync_to_async(make_site)(cache_enabled=False)
    conversation_id = await asked_for_a_person(client, site)
    frame = {**frame, "conversation_id": conversation_id}
    await client.send(frame)
    error = await client.receive_type("error")
    assert error["code"] == "unknown_type"
    handoff = await handoff_of(conversation_id)
    assert handoff.status == "waiting" and handoff.agent_id is None
    await client.assert_usable()


async def test_an_agent_of_site_a_sees_and_claims_nothing_of_site_b(client: Client) -> None:
    site_a = await sync_to_async(make_site)(cache_enabled=False, name="Site A")
    site_b = await sync_to_async(make_site)(cache_enabled=False, name="Site B")
    alice = await sync_to_async(make_agent)("alice-a", [site_a])
    agent = await AgentClient.signed_in(alice)
    conversation_id = await asked_for_a_person(client, site_b)
    # nothing of site B reaches site A's agent, and acting on it is "not found"
    assert await agent.nothing_more(timeout=0.5)
    for kind in ("claim", "open", "hand_back", "resolve", "typing"):
        error = await agent.act(kind, conversation_id)
        assert (error["type"], error["code"], error["ref"]) == (
            "error",
            "not_found",
            conversation_id,
        )
    error = await agent.reply(conversation_id, "Hi from A", cid="x1")
    assert (error["code"], error["ref"]) == ("not_found", "x1")
    assert (await handoff_of(conversation_id)).status == "waiting"
    # a reconnect lists nothing of B either
    await agent.close()
    agent = await AgentClient.signed_in(alice)
    assert agent.inbox["conversations"] == []
    await agent.close()


async def test_non_staff_anonymous_and_foreign_pages_get_no_agent_socket() -> None:
    from tests.chat.agents_support import session_cookie

    site = await sync_to_async(make_site)(cache_enabled=False)
    customer = await sync_to_async(make_agent)("customer", [site], staff=False)
    staff = await sync_to_async(make_agent)("staffer", [site])
    for cookie, origin in (
        (None, "http://127.0.0.1"),  # not signed in
        (await sync_to_async(session_cookie)(customer), "http://127.0.0.1"),  # not staff
        (await sync_to_async(session_cookie)(staff), "https://evil.example"),  # another page
    ):
        socket = AgentClient(cookie, origin=origin)
        connected, code = await socket.communicator.connect()
        assert not connected, (cookie, origin)
        await socket.communicator.disconnect()


async def test_staff_without_a_grant_sees_an_empty_inbox(client: Client) -> None:
    site = await sync_to_async(make_site)(cache_enabled=False)
    nobody = await sync_to_async(make_agent)("no-grant", [])
    agent = await AgentClient.signed_in(nobody)
    await asked_for_a_person(client, site)
    assert agent.inbox["conversations"] == []
    assert await agent.nothing_more(timeout=0.5)
    await agent.close()


async def test_double_claim_has_one_winner(client: Client) -> None:
    site = await sync_to_async(make_site)(cache_enabled=False)
    agents = [
        await AgentClient.signed_in(await sync_to_async(make_agent)(name, [site]))
        for name in ("ann", "ben")
    ]
    conversation_id = await asked_for_a_person(client, site)
    # both click "claim" at the same instant
    answers = await asyncio.gather(*(a.act("claim", conversation_id) for a in agents))
    kinds = sorted(a["type"] if a["type"] != "error" else a["code"] for a in answers)
    assert kinds == ["already_claimed", "claim.ok"]
    winner = agents[[a["type"] for a in answers].index("claim.ok")]
    # a second claim by the winner changes nothing; the customer heard of one agent only
    assert (await winner.act("claim", conversation_id))["type"] == "claim.ok"
    await client.receive_type("agent.joined")
    assert await client.communicator.receive_nothing(timeout=0.5)
    for agent in agents:
        await agent.close()


async def test_replies_to_a_conversation_not_held_or_resolved_are_refused_and_resends_ack_once(
    client: Client,
) -> None:
    site = await sync_to_async(make_site)(cache_enabled=False)
    ann = await AgentClient.signed_in(await sync_to_async(make_agent)("ann2", [site]))
    ben = await AgentClient.signed_in(await sync_to_async(make_agent)("ben2", [site]))
    conversation_id = await asked_for_a_person(client, site)
    # a reply before any claim, and one by an agent who does not hold it, are refused
    assert (await ann.reply(conversation_id, "Too early", cid="e1"))["code"] == "not_holder"
    await ben.act("claim", conversation_id)
    assert (await ann.reply(conversation_id, "Not mine", cid="e2"))["code"] == "not_holder"
    assert (await ann.act("resolve", conversation_id))["code"] == "not_holder"
    # the holder replies, and the resolve ends it
    sent = await ben.reply(conversation_id, "All sorted.", cid="b1")
    await ben.act("resolve", conversation_id)
    # after the resolve a new reply is refused, a resend of the stored one is acked again
    assert (await ben.reply(conversation_id, "One more thing", cid="b2"))["code"] == "not_holder"
    again = await ben.reply(conversation_id, "All sorted.", cid="b1")
    assert again["duplicate"] is True and again["message_id"] == sent["message_id"]
    # and the customer got the reply exactly once
    frames = []
    while not await client.communicator.receive_nothing(timeout=0.5):
        frames.append(await client.receive())
    agent_messages = [f for f in frames if f["type"] == "agent.message"]
    assert [m["text"] for m in agent_messages] == ["All sorted."]
    stored = await sync_to_async(
        Message.objects.filter(conversation_id=conversation_id, role="agent").count
    )()
    assert stored == 1
    await ann.close()
    await ben.close()


async def test_an_agent_socket_dropping_returns_the_conversation_to_the_queue_after_the_grace(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_config, "RECONNECT_GRACE_S", 0.6)
    site = await sync_to_async(make_site)(cache_enabled=False)
    carol = await sync_to_async(make_agent)("carol", [site], first_name="Carol")
    agent = await AgentClient.signed_in(carol)
    conversation_id = await asked_for_a_person(client, site)
    await agent.act("claim", conversation_id)
    await client.receive_type("agent.joined")
    # a reload (socket closed, a new one within the grace) keeps the conversation
    await agent.close()
    agent = await AgentClient.signed_in(carol)
    await asyncio.sleep(1.0)
    assert (await handoff_of(conversation_id)).status == "held"
    assert [c["status"] for c in agent.inbox["conversations"]] == ["held"]
    # a drop with no return gives it back to the queue, and the customer is told
    watcher = await AgentClient.signed_in(await sync_to_async(make_agent)("dave", [site]))
    await agent.close()
    left = await client.receive_type("agent.left", timeout=5)
    assert (left["agent_name"], left["reason"]) == ("Carol", "disconnected")
    handoff = await handoff_of(conversation_id)
    assert handoff.status == "waiting" and handoff.agent_id is None
    listed = await watcher.receive_type("conversation")
    assert listed["conversation"]["status"] == "waiting"
    # and another agent can take it
    assert (await watcher.act("claim", conversation_id))["type"] == "claim.ok"
    await watcher.close()


async def test_a_customer_reconnecting_while_the_agent_types_gets_each_reply_once() -> None:
    site = await sync_to_async(make_site)(cache_enabled=False)
    agent = await AgentClient.signed_in(await sync_to_async(make_agent)("erin", [site]))
    first = Client()
    await first.connect()
    conversation_id = await asked_for_a_person(first, site)
    await agent.act("claim", conversation_id)
    await first.receive_type("agent.joined")
    # the customer's socket drops while the agent types and sends a reply
    await first.close()
    await agent.send({"type": "typing", "conversation_id": conversation_id})
    sent = await agent.reply(conversation_id, "Are you still there?", cid="t1")
    # when the customer comes back, the welcome says an agent holds the chat and the reply
    # missed meanwhile arrives once
    second = Client()
    await second.connect()
    welcome = await second.hello(site, conversation_id)
    assert welcome["resumed"] is True and welcome["handoff"]["status"] == "held"
    assert welcome["handoff"]["agent_name"] == "erin"
    missed = await second.receive_type("agent.message")
    assert missed["message_id"] == sent["message_id"]
    # typing goes to the new socket, and a new reply comes once
    await agent.send({"type": "typing", "conversation_id": conversation_id})
    assert (await second.receive_type("agent.typing"))["agent_name"] == "erin"
    await agent.reply(conversation_id, "Welcome back", cid="t2")
    assert (await second.receive_type("agent.message"))["text"] == "Welcome back"
    assert await second.communicator.receive_nothing(timeout=0.5)
    delivered = await sync_to_async(
        lambda: sorted(
            Message.objects.filter(conversation_id=conversation_id, role="agent").values_list(
                "delivered", flat=True
            )
        )
    )()
    assert delivered == [True, True]
    await second.close()
    await agent.close()


async def test_contact_address_needs_a_handoff_and_a_valid_address(client: Client) -> None:
    site = await sync_to_async(make_site)(cache_enabled=False)
    await client.hello(site)
    await client.send({"type": "contact", "email": "me@example.com"})
    assert (await client.receive_type("error"))["code"] == "no_handoff"
    await client.send({"type": "handoff"})
    await client.receive_type("handoff.ok")
    for bad in ("not-an-address", "", 42, "a@b", "x" * 250 + "@example.com"):
        await client.send({"type": "contact", "email": bad})
        assert (await client.receive_type("error"))["code"] == "bad_field", bad
    await client.send({"type": "contact", "email": " me@example.com "})
    assert (await client.receive_type("contact.ok"))["email"] == "me@example.com"
    handoffs = await sync_to_async(lambda: list(Handoff.objects.all()))()
    assert [h.contact_email for h in handoffs] == ["me@example.com"]


async def test_a_second_handoff_request_changes_nothing_and_other_tabs_hear_of_it() -> None:
    site = await sync_to_async(make_site)(cache_enabled=False)
    tab1, tab2 = Client(), Client()
    await tab1.connect()
    await tab2.connect()
    conversation_id = await asked_for_a_person(tab1, site)
    await tab2.hello(site, conversation_id)
    await tab2.send({"type": "handoff"})
    ok = await tab2.receive_type("handoff.ok")
    assert ok["status"] == "waiting"
    count = await sync_to_async(Handoff.objects.filter(conversation_id=conversation_id).count)()
    assert count == 1
    await tab1.close()
    await tab2.close()


async def test_a_model_answer_stored_while_waiting_reaches_the_agent_following_it(
    client: Client, chat_cache
) -> None:
    from tests.chat.test_finalize import ask_and_answer

    site = await sync_to_async(make_site)(cache_enabled=False)
    agent = await AgentClient.signed_in(await sync_to_async(make_agent)("fay", [site]))
    conversation_id = await asked_for_a_person(client, site)
    await agent.send({"type": "open", "conversation_id": conversation_id})
    await agent.receive_type("transcript")
    # the bot still answers while nobody has claimed it: the finalize task stores its answer
    question = "Do you sell tents for six people?"
    now = (await handoff_of(conversation_id)).requested_at
    await sync_to_async(ask_and_answer)(site.pk, conversation_id, question, now)
    seen = await agent.message_with("The answer to: Do you sell tents")
    assert (seen["role"], seen["source"]) == ("assistant", "llm")
    await agent.close()


async def test_access_withdrawn_while_the_inbox_is_open_applies_to_the_next_action(
    client: Client,
) -> None:
    from chatplatform.dashboards.models import SiteAccess

    site = await sync_to_async(make_site)(cache_enabled=False)
    gus = await sync_to_async(make_agent)("gus", [site])
    agent = await AgentClient.signed_in(gus)
    conversation_id = await asked_for_a_person(client, site)
    # the grant is removed: the next claim sees no such conversation
    await sync_to_async(SiteAccess.objects.filter(user=gus).delete)()
    assert (await agent.act("claim", conversation_id))["code"] == "not_found"
    # staff status is removed: the socket is closed
    await sync_to_async(type(gus).objects.filter(pk=gus.pk).update)(is_staff=False)
    await agent.send({"type": "open", "conversation_id": conversation_id})
    closed = await agent.communicator.receive_output(timeout=5)
    while closed["type"] != "websocket.close":
        closed = await agent.communicator.receive_output(timeout=5)
    assert closed["code"] == 4403
    assert (await handoff_of(conversation_id)).status == "waiting"
