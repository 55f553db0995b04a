"""Visitor tokens: a site vouches for its customer with a signed token, which the server checks
before counting that visitor as admission evidence (chat/visitors.py); anything else is the
client's network address."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import sync_to_async

from chatplatform.chat.visitors import (
    admission_evidence,
    sign_visitor,
    site_token_key,
    verified_visitor,
)
from chatplatform.conversations.models import Conversation
from tests.chat.conftest import Client, make_site

KEY = "pk_test_site"


def token(visitor: str = "customer-42", expires_in: float = 3600, key: str = KEY) -> str:
    return sign_visitor(site_token_key(key), visitor, int(time.time() + expires_in))


def test_a_token_signed_with_the_sites_key_names_its_visitor() -> None:
    assert verified_visitor(KEY, token()) == "customer-42"


@pytest.mark.parametrize(
    "forged",
    [
        token(expires_in=-5),  # expired
        token(key="pk_another_site"),  # another site's key
        token().replace("customer-42", "customer-43"),  # visitor changed after signing
        sign_visitor("a-key-the-client-made-up", "customer-42", int(time.time()) + 60),
        "customer-42.9999999999.",
        "not a token",
    ],
)
def test_any_other_token_names_nobody(forged: str) -> None:
    assert verified_visitor(KEY, forged) is None


def test_evidence_is_the_vouched_visitor_else_the_network() -> None:
    assert admission_evidence("customer-42", True, "203.0.113.7") == "visitor:customer-42"
    assert admission_evidence("v_made_up", False, "203.0.113.7") == "address:203.0.113.7"
    same_64 = {
        admission_evidence("", False, "2001:db8:1:1::1"),
        admission_evidence("", False, "2001:db8:1:1:ffff::9"),
    }
    assert same_64 == {"network:2001:db8:1:1::/64"}
    assert admission_evidence("v_made_up", False, None) == ""


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio(loop_scope="session")
async def test_hello_with_a_valid_token_opens_a_vouched_conversation() -> None:
    site = await sync_to_async(make_site)()
    signed = sign_visitor(site_token_key(site.widget_key), "customer-7", int(time.time()) + 600)
    for visitor_token, vouched in ((signed, True), (signed[:-1] + "0", False)):
        chat = Client()
        await chat.connect()
        await chat.send(
            {"type": "hello", "v": 1, "site_key": site.widget_key, "visitor_id": "v_widget",
             "visitor_token": visitor_token}
        )  # fmt: skip
        welcome = await chat.receive_type("welcome")
        await chat.close()
        conversation = await Conversation.objects.aget(pk=welcome["conversation_id"])
        assert welcome["visitor_verified"] is vouched
        assert conversation.visitor_verified is vouched
        assert conversation.visitor_id == ("customer-7" if vouched else "v_widget")
