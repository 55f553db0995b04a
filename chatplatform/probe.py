"""`python -m chatplatform.probe URL`: exit 0 when URL answers 2xx within the timeout, else 1.

The containers' health check (docker-compose.yml). It runs inside the container next to the
server, so the URL names 127.0.0.1, which the container entrypoint adds to ALLOWED_HOSTS
(chatplatform/container.py). No curl in the slim image: the standard library does it.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

TIMEOUT_S = 4.0


def probe(url: str, timeout_s: float = TIMEOUT_S) -> tuple[bool, str]:
    """(healthy, what was seen) for one GET of `url`."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return 200 <= response.status < 300, f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        return False, f"HTTP {error.code}: {error.read(300).decode(errors='replace')}"
    except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
        return False, f"no answer: {error}"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m chatplatform.probe URL", file=sys.stderr)
        return 2
    healthy, seen = probe(argv[0])
    print(f"{argv[0]}: {seen}", file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
