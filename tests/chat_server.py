"""An OpenAI-compatible chat server on 127.0.0.1 for the judge tests (started by the `chat_server`
fixture in conftest.py): real HTTP, answers chosen per test, every request counted."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable

from helpers import LoopbackServer, QuietHandler

Answer = Callable[[dict, "ChatServer"], tuple[int, str]]


class ChatServer:
    """`/v1/chat/completions` answered by `answer(request_json, server) -> (status, content)`.

    Counts requests per product, records the Authorization headers and the most requests ever in
    flight at once. `release` is set at teardown so that handlers told to hang can finish.
    """

    def __init__(self, answer: Answer) -> None:
        self.answer, self.lock, self.release = answer, threading.Condition(), threading.Event()
        self.per_product: Counter[str] = Counter()
        self.auth: list[str | None] = []
        self.bodies: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        owner = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.in_flight += 1
                    owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
                    owner.lock.notify_all()
                    owner.per_product[product_of(body)] += 1
                    owner.auth.append(self.headers.get("Authorization"))
                    owner.bodies.append(body)
                try:
                    if self.path != "/v1/chat/completions":
                        status, text = 404, "no such route"
                    else:
                        status, text = owner.answer(body, owner)
                finally:
                    with owner.lock:
                        owner.in_flight -= 1
                if status == 200:
                    text = json.dumps(
                        {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
                    )
                self.reply(status, text)

        self.server = LoopbackServer(Handler)
        self.base_url = self.server.base_url

    def close(self) -> None:
        self.release.set()
        self.server.close()


def user_message(body: dict) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


def product_of(body: dict) -> str:
    match = re.search(r"^Product: (.*)$", user_message(body), re.MULTILINE)
    return match.group(1) if match else ""
