"""``FakeWeChat``: a handler's ``ctx.wechat`` for tests, recording what the handler asked and
answering from what the test gave it. Nothing leaves the process.

    fake = FakeWeChat(functions={"orderStatus": lambda data: {"status": "已发货"}},
                      collections={"faq": [{"key": "shipping", "answer": "包邮"}]})
    route, replies = dispatch(router, make_text("订单 123456"), wechat=fake)
    assert fake.function_calls == [("orderStatus", {"order": "123456"})]
    assert fake.sent == [(OPENID, TextReply("正在查询…"))]

Statements run on the collections as the emulator runs them (``cloudquery.parse``; the same
matching), and a function, collection or media id the test did not give fails as WeChat
would: CloudNotFound, -502005, 40007.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping
from typing import Any

from webhook.cloudquery import Statement, parse
from webhook.errors import CloudNotFound, Permanent
from webhook.push.messages import Reply, TransferToHuman
from webhook.testing.emulator.database import execute
from webhook.testing.emulator.state import CloudEnv, Fail
from webhook.testing.factories import APPID, OPENID
from webhook.wechat.cloud import database_result

__all__ = ["FakeWeChat"]

FunctionAnswer = Callable[[dict[str, Any]], Any] | BaseException | Any


class FakeWeChat:
    """``functions``: name -> a callable taking the data, an exception to raise, or the result
    itself; ``collections``: name -> records; ``media``: media id -> bytes; ``customer``: the
    openid a send without ``openid`` goes to (the factories' customer)."""

    def __init__(self, *, functions: Mapping[str, FunctionAnswer] | None = None,
                 collections: Mapping[str, list[dict[str, Any]]] | None = None,
                 media: Mapping[str, bytes] | None = None, customer: str = OPENID) -> None:
        self.functions = dict(functions or {})
        self.media = dict(media or {})
        self.customer = customer
        ids = (f"fake-{n}" for n in itertools.count(1))
        self._new_id = lambda: next(ids)
        self.env = CloudEnv("fake", APPID, collections={
            name: [dict(record, _id=record.get("_id") or self._new_id()) for record in records]
            for name, records in (collections or {}).items()})
        self.sent: list[tuple[str, Reply]] = []
        self.typing_calls: list[bool] = []
        self.function_calls: list[tuple[str, dict[str, Any]]] = []
        self.statements: list[str] = []
        self.downloads: list[str] = []

    def send(self, reply: Reply, *, openid: str | None = None) -> None:
        if not isinstance(reply, Reply) or isinstance(reply, TransferToHuman):
            raise TypeError("send() takes a reply to send (TextReply, ImageReply, ...)")
        self.sent.append((openid or self.customer, reply))

    def typing(self, on: bool = True) -> None:
        self.typing_calls.append(on)

    def call_function(self, name: str, data: Mapping[str, Any] | None = None) -> Any:
        event = json.loads(json.dumps(dict(data or {})))   # as it would travel
        self.function_calls.append((name, event))
        if name not in self.functions:
            raise CloudNotFound(-501000, f"FunctionName parameter could not be found: {name}",
                                what="function")
        answer = self.functions[name]
        if isinstance(answer, BaseException):
            raise answer
        return answer(event) if callable(answer) else json.loads(json.dumps(answer))

    def database(self, statement: Statement) -> Any:
        self.statements.append(statement.text)
        try:
            answer = execute(self.env, parse(statement.text), self._new_id)
        except Fail as fail:
            raise Permanent(fail.errcode, fail.errmsg) from None
        return database_result(statement.action, answer)

    def download_media(self, media_id: str) -> bytes:
        self.downloads.append(media_id)
        if media_id not in self.media:
            raise Permanent(40007, "invalid media_id")
        return self.media[media_id]
