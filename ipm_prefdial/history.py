"""Shortening a prompt from its oldest history: the one rule behind an engine's context budget, `--trim-tokens` and
`ipm train`'s `max_length`, whatever measures the length.

A prompt is an optional system message and a body. A body of one message (the SP format: the dialogue as lines)
loses its oldest lines; a chat body (user, assistant, ..., user) loses whole exchanges, oldest first, so it still
opens with a user message. The system prompt and the current turn always stay.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

M = TypeVar("M")  # a message: a {"role", "content"} dict or a (role, content) pair


def _role(message) -> str:
    return message["role"] if isinstance(message, dict) else message[0]


def _content(message) -> str:
    return message["content"] if isinstance(message, dict) else message[1]


def _with_content(message, content: str):
    return {**message, "content": content} if isinstance(message, dict) else (message[0], content)


def drop_oldest(messages: Sequence[M], fits: Callable[[list[M]], bool], *, split_last: bool = False
                ) -> tuple[list[M], int]:
    """The prompt with the fewest oldest units removed so that ``fits`` holds, and how many were removed (messages
    of a chat body, lines of a one-message body). When nothing fits, as much as may go is gone; with ``split_last``
    (an engine's hard context limit) a chat body then loses the oldest lines of its current turn too.

    ``fits`` is called O(log n) times (a binary search: removing more never makes a prompt longer)."""
    messages = list(messages)
    if fits(messages):
        return messages, 0
    head = messages[:1] if messages and _role(messages[0]) == "system" else []
    body = messages[len(head):]
    if len(body) == 1:
        return _drop_lines(head, body[0], fits)
    pairs = (len(body) - 1) // 2

    def candidate(k: int) -> list[M]:
        return head + body[2 * k:]

    k = _smallest(1, pairs, lambda k: fits(candidate(k)))
    if k is not None:
        return candidate(k), 2 * k
    if split_last and body:
        shortened, lines = _drop_lines(head, body[-1], fits)
        return shortened, 2 * pairs + lines
    return candidate(pairs), 2 * pairs


def _drop_lines(head: list, message, fits) -> tuple[list, int]:
    lines = _content(message).split("\n")

    def candidate(k: int) -> list:
        return head + [_with_content(message, "\n".join(lines[k:]))]

    k = _smallest(1, len(lines) - 1, lambda k: fits(candidate(k)))
    k = len(lines) - 1 if k is None else k
    return candidate(k), k


def _smallest(lo: int, hi: int, ok: Callable[[int], bool]) -> int | None:
    """The smallest k in [lo, hi] with ok(k), for a monotone ok; None when ok(hi) is false."""
    if hi < lo or not ok(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo
