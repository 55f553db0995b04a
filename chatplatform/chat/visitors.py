"""Who asked a question, as far as the server can tell: the evidence the cache's admission
counts (a model answer is served to everyone once enough *distinct* visitors got it).

The widget's `visitor_id` is chosen by the client: anyone can invent three of them and get a
model answer admitted for every later customer of a site. So it is not evidence. What counts:

- a visitor the site vouches for: the site's own server signs the visitor's id (its customer
  account, say) with the site's visitor-token key and renders the token into its page
  (`data-visitor-token` on the widget's script tag); the widget sends it in `hello`;
- otherwise the client's network address (an IPv6 address counts by its /64, which one
  customer usually holds whole).

A token is `<visitor>.<expires>.<signature>`: `visitor` 1-64 of `A-Za-z0-9_:-`, `expires` a
unix time in seconds, `signature` the hex HMAC-SHA256 of `<visitor>.<expires>` under the site's
key (shown on the site's admin page; `sign_visitor` below is the reference implementation).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import time

from django.utils.crypto import salted_hmac

TOKEN_SALT = "chatplatform.visitor-token"
_TOKEN = re.compile(r"([A-Za-z0-9_:-]{1,64})\.(\d{1,12})\.([0-9a-f]{64})")
IPV6_NETWORK_BITS = 64


def site_token_key(widget_key: str) -> str:
    """The key a site signs its visitors' tokens with: derived from SECRET_KEY, one per site."""
    return salted_hmac(TOKEN_SALT, widget_key, algorithm="sha256").hexdigest()


def sign_visitor(key: str, visitor: str, expires: int) -> str:
    """A token for `visitor`, valid until `expires` (unix seconds), signed with `key`."""
    payload = f"{visitor}.{expires}"
    signature = hmac.new(key.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return f"{payload}.{signature}"


def verified_visitor(widget_key: str, token: str, now: float | None = None) -> str | None:
    """The visitor a valid, unexpired token of this site names; None for any other token."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    visitor, expires, _ = match.groups()
    if int(expires) < (time.time() if now is None else now):
        return None
    expected = sign_visitor(site_token_key(widget_key), visitor, int(expires))
    return visitor if hmac.compare_digest(expected, token) else None


def admission_evidence(visitor_id: str, verified: bool, client_ip: str | None) -> str:
    """What counts as one visitor for the cache's admission ("" when there is nothing)."""
    if verified and visitor_id:
        return f"visitor:{visitor_id}"
    if not client_ip:
        return ""
    address = ipaddress.ip_address(client_ip)
    if address.version == 6:
        network = ipaddress.ip_network(f"{address}/{IPV6_NETWORK_BITS}", strict=False)
        return f"network:{network}"
    return f"address:{address}"
