"""Container entrypoint: assemble the connection URLs from their parts, then run the command.

A password may hold any character. Pasted raw into a URL it changes how the URL parses
(`postgres://app:p@ss/word@db/app` makes the host `ss`), so compose files and Kubernetes
Secrets hand over the parts and this quotes them once, correctly:

    DATABASE_URL  from POSTGRES_HOST, POSTGRES_PORT (5432), POSTGRES_DB, POSTGRES_USER,
                  POSTGRES_PASSWORD
    REDIS_URL     from REDIS_HOST, REDIS_PORT (6379), REDIS_DB (0), REDIS_PASSWORD,
                  REDIS_TLS (true: rediss://)

A URL that is already set is kept as it is, and a URL is only built when its host is set.

It also adds this container's own addresses (loopback and the addresses its host name resolves
to) to a set ALLOWED_HOSTS: health probes, the kubelet and Prometheus reach a replica by its IP
address, and Django answers 400 to a Host header it does not serve. Only something that can
reach the replica directly sends such a Host; the public name stays the only one the proxy
serves.
Then the process replaces itself with the command (exec), so the command receives the
container's signals directly (SIGTERM drains: chatplatform/serve.py, inference/worker.py).

Usage (the images' ENTRYPOINT): python -m chatplatform.container COMMAND [ARGS...]
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from urllib.parse import quote


class MissingSetting(ValueError):
    """A URL cannot be built: one of its parts is not set."""


def _part(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    value = env.get(name, "").strip() or default
    if value is None:
        raise MissingSetting(f"{name} is not set")
    return value


def database_url(env: Mapping[str, str]) -> str | None:
    """postgres:// URL from the POSTGRES_* parts, or None when POSTGRES_HOST is not set."""
    if not env.get("POSTGRES_HOST", "").strip():
        return None
    user = quote(_part(env, "POSTGRES_USER"), safe="")
    password = quote(_part(env, "POSTGRES_PASSWORD"), safe="")
    host = _part(env, "POSTGRES_HOST")
    port = _part(env, "POSTGRES_PORT", "5432")
    name = quote(_part(env, "POSTGRES_DB"), safe="")
    return f"postgres://{user}:{password}@{host}:{port}/{name}"


def redis_url(env: Mapping[str, str]) -> str | None:
    """redis:// (or rediss://) URL from the REDIS_* parts, or None without REDIS_HOST."""
    if not env.get("REDIS_HOST", "").strip():
        return None
    tls = env.get("REDIS_TLS", "").strip().lower() in {"1", "true", "yes"}
    scheme = "rediss" if tls else "redis"
    password = env.get("REDIS_PASSWORD", "")
    auth = f":{quote(password, safe='')}@" if password else ""
    host = _part(env, "REDIS_HOST")
    port = _part(env, "REDIS_PORT", "6379")
    db = _part(env, "REDIS_DB", "0")
    return f"{scheme}://{auth}{host}:{port}/{db}"


def own_addresses() -> list[str]:
    """Loopback and the addresses this host's name resolves to, as Host headers name them."""
    addresses = ["127.0.0.1", "[::1]"]
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None)
    except OSError:  # a name that does not resolve: loopback only
        infos = []
    for family, *_rest, sockaddr in infos:
        address = str(sockaddr[0])
        addresses.append(f"[{address}]" if family == socket.AF_INET6 else address)
    return list(dict.fromkeys(addresses))


def allowed_hosts_with(value: str, addresses: list[str]) -> str:
    """ALLOWED_HOSTS (a comma list) plus `addresses`; "*" and an empty value stay as they are."""
    hosts = [host.strip() for host in value.split(",") if host.strip()]
    if not hosts or "*" in hosts:
        return value
    return ",".join(dict.fromkeys([*hosts, *addresses]))


def environment_with_urls(env: Mapping[str, str]) -> dict[str, str]:
    """`env` plus DATABASE_URL and REDIS_URL built from their parts where not already set,
    and ALLOWED_HOSTS extended with this container's own addresses."""
    result = dict(env)
    if "ALLOWED_HOSTS" in result:
        result["ALLOWED_HOSTS"] = allowed_hosts_with(result["ALLOWED_HOSTS"], own_addresses())
    for name, build in (("DATABASE_URL", database_url), ("REDIS_URL", redis_url)):
        if result.get(name, "").strip():
            continue
        url = build(env)
        if url is not None:
            result[name] = url
    return result


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m chatplatform.container COMMAND [ARGS...]", file=sys.stderr)
        return 2
    try:
        env = environment_with_urls(os.environ)
    except MissingSetting as error:
        print(f"container: cannot build a connection URL: {error}", file=sys.stderr)
        return 2
    os.execvpe(argv[0], argv, env)
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
