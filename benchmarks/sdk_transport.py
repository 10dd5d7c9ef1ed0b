"""The ``openai`` SDK as the HTTP engine's transport, for bench_scale.py's comparison only (``IPM_BENCH_SDK=1``).

``install()`` replaces ``OpenAIEngine``'s POST with ``AsyncOpenAI(...).chat.completions.with_raw_response.create``
on the SDK's aiohttp transport (``openai[aiohttp]``, ``DefaultAioHttpClient``): the same bodies (fields the SDK does
not type, such as ``grammar``, go through ``extra_body``), the same headers, retries left to our engine
(``max_retries=0``), and the answer read by our own parser, so the two transports differ in the HTTP client only.
"""

from __future__ import annotations

import asyncio
import json
import time

from ipm_prefdial.engines.openai_http import OpenAIEngine, Response
from ipm_prefdial.engines.requests import ChatRequest, ChatResult, failure

TYPED = {"model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "seed",
         "response_format"}


async def _sdk_complete(self: OpenAIEngine, request: ChatRequest) -> ChatResult:
    import openai

    if getattr(self, "_sdk", None) is None:
        await self.start()
        self._sdk = openai.AsyncOpenAI(base_url=self.base_url, api_key=self._api_key or "none", max_retries=0,
                                       timeout=self.timeout, default_headers=self._headers,
                                       http_client=openai.DefaultAioHttpClient())
    body = self.body(request)
    started = time.perf_counter()
    try:
        raw = await self._sdk.chat.completions.with_raw_response.create(
            **{k: v for k, v in body.items() if k in TYPED}, extra_body={k: v for k, v in body.items()
                                                                         if k not in TYPED} or None)
        response = Response(raw.status_code, raw.http_response.content, raw.headers)
    except openai.APIStatusError as exc:
        response = Response(exc.status_code, exc.response.content, exc.response.headers)
    except (openai.APIConnectionError, asyncio.TimeoutError) as exc:
        return failure("connection", str(exc))
    if response.status_code != 200:
        return failure("server_error", f"HTTP {response.status_code}")
    parsed = self._parse(request, response, time.perf_counter() - started)
    self.breaker.ok()
    return parsed if parsed is not None else failure("malformed_response", json.dumps(response.text[:80]))


def install() -> None:
    close = OpenAIEngine.close

    async def close_both(self: OpenAIEngine) -> None:
        sdk, self._sdk = getattr(self, "_sdk", None), None
        if sdk is not None:
            await sdk.close()
        await close(self)

    OpenAIEngine.complete = _sdk_complete  # type: ignore[method-assign]
    OpenAIEngine.close = close_both  # type: ignore[method-assign]
