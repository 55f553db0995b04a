"""A hello makes the process hold its site's cache index (many tenants: a process holds only
recently used sites), so the customer's first question does not pay for reading it."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from tests.chat.conftest import Client, make_site

pytestmark = pytest.mark.django_db(transaction=True)


async def test_hello_loads_a_site_the_process_does_not_hold(chat_cache) -> None:
    # given: a site whose index this process dropped (least recently used)
    site = await sync_to_async(make_site)()
    chat_cache.replica._indexes.pop(str(site.id), None)
    assert chat_cache.replica.is_cold(str(site.id))
    client = Client()
    await client.connect()
    try:
        # when
        await client.hello(site)
        # then: held again shortly after the welcome, before any question
        for _ in range(100):
            if not chat_cache.replica.is_cold(str(site.id)):
                break
            await asyncio.sleep(0.05)
        assert not chat_cache.replica.is_cold(str(site.id))
    finally:
        await client.close()
