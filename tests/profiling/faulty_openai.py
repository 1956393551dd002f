"""A small OpenAI-style streaming server for the benchmark's failure paths: HTTP errors, malformed and
cut-off streams, servers that report no usage, a chat template that adds tokens. The simulator's real
endpoint (sim/realtime.py) is what the end-to-end test measures; this one exists because a healthy
simulator never misbehaves on purpose.

Behaviour by requested model name: "ok", "http500", "malformed", "truncated", "nousage", "slow", "flaky"
(every second request of more than one token answers HTTP 500; 1-token probes always succeed).
Tokens are whitespace-separated words; the chat API adds 3 template tokens, like a real chat template.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from aiohttp import web

from sim.services import free_port

CHAT_TEMPLATE_TOKENS = 3


@dataclass
class FaultyServer:
    port: int = 0
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    flaky_seen: int = 0
    models_seen: list[str] = field(default_factory=list)
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/completions", self.handle)
        app.router.add_post("/v1/chat/completions", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests += 1
        model = body.get("model", "ok")
        self.models_seen.append(model)
        if model == "flaky" and int(body.get("max_tokens", 16)) > 1:
            self.flaky_seen += 1
        if model == "http500" or (model == "flaky" and self.flaky_seen % 2 == 1):
            return web.json_response({"error": {"message": "boom"}}, status=500)
        chat = request.path.endswith("/chat/completions")
        prompt = body["messages"][0]["content"] if chat else body["prompt"]
        prompt_tokens = len(prompt.split()) + (CHAT_TEMPLATE_TOKENS if chat else 0)
        max_tokens = int(body.get("max_tokens", 16))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.002)  # prefill
            for i in range(max_tokens):
                if model == "malformed" and i == 1:
                    await resp.write(b"data: {not json\n\n")
                    return resp
                if model == "truncated" and i == 2:
                    return resp  # closes without [DONE]
                # per-token time grows with the batch, as on a GPU
                await asyncio.sleep(0.001 + 0.0005 * self.in_flight + (0.05 if model == "slow" else 0))
                choice = {"index": 0, "delta": {"content": " tok"}} if chat else {"index": 0, "text": " tok"}
                await resp.write(f"data: {json.dumps({'choices': [choice]})}\n\n".encode())
            if model != "nousage":
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": max_tokens}
                await resp.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
            await resp.write(b"data: [DONE]\n\n")
            return resp
        finally:
            self.in_flight -= 1
