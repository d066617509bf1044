"""The OpenAI wire format: chat requests in, completions and SSE chunks out; errors in OpenAI's shape.

Must not run the model. Parsing is strict: anything we cannot honour is a 400 with a message that says why,
never silently ignored in a way that changes the output.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from dsocr.generation.params import SamplingParams

_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[^;,]*)*)(?P<b64>;base64)?,(?P<data>.*)$",
                       re.DOTALL)


class ApiError(Exception):
    """An error to send to the client as `{"error": {...}}` with an HTTP status."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True, slots=True)
class ChatRequest:
    image: bytes
    prompt: str
    sampling: SamplingParams
    stream: bool
    include_usage: bool
    skip_special_tokens: bool
    model: str


def decode_data_uri(uri: str, *, what: str = "image_url") -> bytes:
    match = _DATA_URI.match(uri)
    if match is None:
        raise ApiError(400, f"{what}: expected a data: URI", param=what)
    data = match.group("data")
    if not match.group("b64"):
        from urllib.parse import unquote_to_bytes

        return unquote_to_bytes(data)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{what}: the data: URI is not valid base64", param=what) from None


def parse_chat(body: dict[str, Any], *, default_max_tokens: int, token_string: Any,
               fetch_remote: Any) -> ChatRequest:
    """A /v1/chat/completions body -> what the engine needs. `token_string(id)` maps whitelist ids to
    token strings (None when unknown); `fetch_remote(url)` returns bytes or raises ApiError."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages: a non-empty list is required", param="messages")
    images: list[bytes] = []
    texts: list[str] = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            raise ApiError(400, "messages: each message needs a role of system, user or assistant", param="messages")
        if message["role"] != "user":
            continue  # the model has no system prompt or dialogue: only user content is read
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(parts, list):
            raise ApiError(400, "messages: content must be a string or a list of parts", param="messages")
        for part in parts:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                texts.append(str(part.get("text", "")))
            elif kind == "image_url":
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                if not isinstance(url, str):
                    raise ApiError(400, "image_url: a url string is required", param="messages")
                images.append(decode_data_uri(url) if url.startswith("data:") else fetch_remote(url))
            else:
                raise ApiError(400, f"messages: unsupported content part type {kind!r}", param="messages")
    if len(images) != 1:
        raise ApiError(400, f"messages: exactly one image is needed per request, got {len(images)}",
                       param="messages")
    prompt = "\n".join(t for t in texts if t.strip()) or None
    return ChatRequest(image=images[0], prompt=prompt or "<image>\nFree OCR.",
                       sampling=_sampling(body, default_max_tokens, token_string),
                       stream=bool(body.get("stream", False)),
                       include_usage=bool((body.get("stream_options") or {}).get("include_usage", False)),
                       skip_special_tokens=bool(body.get("skip_special_tokens", True)),
                       model=str(body.get("model", "")))


def _sampling(body: dict[str, Any], default_max_tokens: int, token_string: Any) -> SamplingParams:
    xargs = body.get("vllm_xargs") or {}
    if not isinstance(xargs, dict):
        raise ApiError(400, "vllm_xargs: must be an object", param="vllm_xargs")
    if body.get("n", 1) != 1:
        raise ApiError(400, "n: only 1 is supported", param="n")
    whitelist = ("<td>", "</td>")
    if "whitelist_token_ids" in xargs:
        ids = xargs["whitelist_token_ids"]
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise ApiError(400, "vllm_xargs.whitelist_token_ids: a list of token ids", param="vllm_xargs")
        strings = [token_string(i) for i in ids]
        unknown = [i for i, s in zip(ids, strings) if s is None]
        if unknown:
            raise ApiError(400, f"vllm_xargs.whitelist_token_ids: unknown ids {unknown}", param="vllm_xargs")
        whitelist = tuple(strings)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens")) or default_max_tokens
    ngram = xargs.get("ngram_size", 30)
    try:
        return SamplingParams(
            max_new_tokens=max_tokens, temperature=body.get("temperature") or 0.0,
            top_p=1.0 if body.get("top_p") is None else body["top_p"], top_k=xargs.get("top_k", 0),
            seed=body.get("seed"), ngram_size=ngram, ngram_window=max(xargs.get("window_size", 90), ngram),
            ngram_whitelist=whitelist, ignore_eos=bool(body.get("ignore_eos", False)),
            stop_on_loop=bool(body.get("stop_on_loop", True)))
    except ValueError as e:
        raise ApiError(400, str(e)) from None


def completion(request_id: str, model: str, text: str, finish_reason: str, usage: dict[str, int]) -> dict:
    return {"id": request_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage}


def chunk(request_id: str, model: str, created: int, delta: dict, finish_reason: str | None = None,
          usage: dict | None = None) -> str:
    payload: dict[str, Any] = {"id": request_id, "object": "chat.completion.chunk", "created": created,
                               "model": model}
    payload["choices"] = [] if usage is not None else [{"index": 0, "delta": delta, "logprobs": None,
                                                         "finish_reason": finish_reason}]
    if usage is not None:
        payload["usage"] = usage
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
