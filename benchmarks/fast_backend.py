"""A fast fake OpenAI-compatible back end for load benchmarks: a raw ASGI app under uvicorn with
httptools and uvloop, answering every chat completion with the same canned JSON (no parsing,
no sleeping), so that the gateway, not the back end, is what a load test measures.

    python benchmarks/fast_backend.py PORT
"""

from __future__ import annotations

import sys

import orjson

ANSWER = orjson.dumps({
    "id": "chatcmpl-fast", "object": "chat.completion", "created": 0, "model": "fast",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "hello from the fast back end"}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}})
MODELS = orjson.dumps({"object": "list", "data": [{"id": "fast", "object": "model"}]})
HEADERS = [(b"content-type", b"application/json")]


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:  # drain the body
        message = await receive()
        more = message.get("more_body", False)
    body = MODELS if scope["method"] == "GET" else ANSWER
    await send({"type": "http.response.start", "status": 200,
                "headers": HEADERS + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
                access_log=False, log_level="warning", timeout_keep_alive=75)
