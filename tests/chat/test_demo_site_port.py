"""`PORT=8200 make run`: the demo shop's widget works on the port the platform serves.

The demo site's allowed origins used to be fixed to port 8000, so the widget on any other port
said "This site does not allow the widget on this page". The run command now passes the
origins of its HOST and PORT to `load_demo_site`, which adds them to the site."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command

from chatplatform.faq.demo_data import DEMO_SITE_NAME
from chatplatform.run import demo_origins_for
from chatplatform.tenants.models import Site
from tests.chat.conftest import Client

pytestmark = pytest.mark.django_db(transaction=True)


def test_demo_origins_follow_host_and_port() -> None:
    assert demo_origins_for("127.0.0.1", 8200) == ["http://127.0.0.1:8200", "http://localhost:8200"]
    assert demo_origins_for("0.0.0.0", 8200) == ["http://127.0.0.1:8200", "http://localhost:8200"]
    assert "http://[::1]:8200" in demo_origins_for("::", 8200)


@pytest.mark.asyncio(loop_scope="session")
async def test_the_demo_widget_is_welcome_on_a_non_default_port() -> None:
    # given the demo site loaded first as on port 8000, then by `PORT=8200 make run`
    await sync_to_async(call_command)("load_demo_site")
    await sync_to_async(call_command)(
        "load_demo_site", "--origins", *demo_origins_for("127.0.0.1", 8200)
    )
    site = await Site.objects.aget(name=DEMO_SITE_NAME)
    # when the widget on the demo page at port 8200 says hello
    for origin in ("http://127.0.0.1:8200", "http://localhost:8200", "http://127.0.0.1:8000"):
        chat = Client(origin=origin)
        await chat.connect()
        try:
            welcome = await chat.hello(site)
        finally:
            await chat.close()
        # then it is welcome (and port 8000's page still is)
        assert welcome["type"] == "welcome"


def test_a_malformed_origin_is_refused_with_its_name() -> None:
    with pytest.raises(CommandError, match="--origins: 'localhost:8200' is not an origin"):
        call_command("load_demo_site", "--origins", "localhost:8200")
