"""A reverse proxy in front of the real vLLM server that injects server faults on demand.

    var/vllm-venv/bin/python tests/fault_proxy.py --port P --upstream http://127.0.0.1:Q

Runs in the vLLM server's virtual environment (it uses that environment's aiohttp). Every
request is passed to vLLM unchanged, except that each chat completion takes the next fault
queued with `POST /_faults {"faults": [...]}`:

- `{"kind": "status", "status": 429, "retry_after": "1"}`: that status with an OpenAI-style
  error body (and the Retry-After header when given), without calling vLLM;
- `{"kind": "cut", "after": N}`: vLLM's stream, cut (connection aborted) after N events;
- `{"kind": "malformed", "after": N}`: after N events, one event that is not JSON;
- `{"kind": "stall", "seconds": S}`: nothing at all for S seconds (a slow first token), then
  vLLM's stream.

`GET /_log` lists what happened to each chat completion (fault, events forwarded, whether the
client went away first); `POST /_reset` clears faults and log. When vLLM is down the proxy
answers 502, like the load balancer or Kubernetes service in front of a real server; when
vLLM dies mid-stream the proxy cuts the client's stream too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import web

CHAT_PATH = "/v1/chat/completions"
HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "content-encoding"}


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: list[dict[str, Any]] = []
        self.log: list[dict[str, Any]] = []
        self.session: aiohttp.ClientSession | None = None

    async def start(self, app: web.Application) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))

    async def stop(self, app: web.Application) -> None:
        assert self.session is not None
        await self.session.close()

    async def set_faults(self, request: web.Request) -> web.Response:
        self.faults.extend((await request.json())["faults"])
        return web.json_response({"queued": len(self.faults)})

    async def reset(self, request: web.Request) -> web.Response:
        self.faults.clear()
        self.log.clear()
        return web.json_response({})

    async def get_log(self, request: web.Request) -> web.Response:
        return web.json_response(self.log)

    async def forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        record: dict[str, Any] = {"path": request.path, "events": 0, "client_gone": False}
        fault: dict[str, Any] = {}
        if request.path == CHAT_PATH:
            fault = self.faults.pop(0) if self.faults else {}
            record["fault"] = fault.get("kind")
            self.log.append(record)
        if fault.get("kind") == "status":
            return status_response(fault)
        if fault.get("kind") == "stall" and await client_left_within(request, fault["seconds"]):
            record["client_gone"] = True
            return web.Response(status=499)
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in {"host"}}
        try:
            upstream = await self.session.request(
                request.method, self.upstream + request.path_qs, data=body, headers=headers
            )
        except aiohttp.ClientConnectionError as error:
            return web.json_response(
                {"error": {"message": f"upstream unreachable: {error}", "code": 502}}, status=502
            )
        async with upstream:
            return await self.relay(request, upstream, fault, record)

    async def relay(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        fault: dict[str, Any],
        record: dict[str, Any],
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status)
        for key, value in upstream.headers.items():
            if key.lower() not in HOP_HEADERS:
                response.headers[key] = value
        await response.prepare(request)
        try:
            async for line in upstream.content:
                if line.startswith(b"data:"):
                    if (
                        fault.get("kind") in {"cut", "malformed"}
                        and record["events"] >= fault["after"]
                    ):
                        if fault["kind"] == "cut":
                            abort(request)
                            return response
                        await response.write(b"data: {not json at all\n\n")
                        fault = {}  # once
                    record["events"] += 1
                await response.write(line)
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            record["client_gone"] = True  # leaving the block closes vLLM's stream: it aborts
            return response
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
            abort(request)  # vLLM died mid-stream: so does the client's stream
            return response
        await response.write_eof()
        return response


def status_response(fault: dict[str, Any]) -> web.Response:
    status = int(fault["status"])
    headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else {}
    body = {"error": {"message": f"injected HTTP {status}", "type": "injected", "code": status}}
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=headers
    )


async def client_left_within(request: web.Request, seconds: float) -> bool:
    """Wait `seconds`; True as soon as the client closes its connection."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        transport = request.transport
        if transport is None or transport.is_closing():
            return True
        await asyncio.sleep(0.02)
    return False


def abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    proxy = FaultProxy(args.upstream)
    app = web.Application()
    app.on_startup.append(proxy.start)
    app.on_cleanup.append(proxy.stop)
    app.router.add_post("/_faults", proxy.set_faults)
    app.router.add_post("/_reset", proxy.reset)
    app.router.add_get("/_log", proxy.get_log)
    app.router.add_route("*", "/{tail:.*}", proxy.forward)
    web.run_app(app, host="127.0.0.1", port=args.port, print=lambda *_: print("proxy ready"))


if __name__ == "__main__":
    main()
