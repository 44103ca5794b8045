"""``wxpush rules check [FILE]`` and ``wxpush rules test [FILE] TEXT``: the rules, offline.

Both build the router exactly as the server does (``handlers.build_router``: the config's
Python routers first, then the rules file and the built-ins) and ``test`` asks it the same
question (``Router.route`` then ``Route.run``), so what it prints is what the server would do;
nothing is sent. Handlers get ``webhook.testing.FakeWeChat`` as ``ctx.wechat``: cloud
functions and collections answer what ``--function`` and ``--collection`` say. FILE defaults
to ``[server] rules`` of the config; the config is ``--config``, ``$WXPUSH_CONFIG`` or
``./wxpush.toml`` as everywhere (with FILE and no config there, the file alone).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from webhook.config.settings import DEFAULT_CONFIG, config_path
from webhook.config.tomlfile import load_toml
from webhook.errors import WxpushError
from webhook.push.messages import (ENTER_SESSION_EVENT, EnterSessionEvent, Event, Message,
                                   TextMessage)
from webhook.routing.router import Router
from webhook.testing.fakewechat import FakeWeChat

__all__ = ["register"]

_UNSET = object()
_CONFIG_HELP = "config file naming [server] rules (default: $WXPUSH_CONFIG or ./wxpush.toml)"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("rules", help="check or try the rules file")
    sub = parser.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    check = sub.add_parser("check", help="validate the rules file (errors name file:line)")
    check.add_argument("file", nargs="?", help="rules file (default: [server] rules)")
    check.add_argument("--config", help=_CONFIG_HELP)
    check.set_defaults(handler=check_rules)
    test = sub.add_parser("test", help="show which rule a message reaches and what it would send",
                          description='e.g. wxpush rules test rules.toml "几点开门"; '
                                      "wxpush rules test --event user_enter_tempsession")
    test.add_argument("args", nargs="*", metavar="[FILE] TEXT",
                      help="rules file (default: [server] rules) and the customer's text")
    test.add_argument("--event", help="an event push instead of text, e.g. " + ENTER_SESSION_EVENT)
    test.add_argument("--session-from", help=f"SessionFrom (implies --event {ENTER_SESSION_EVENT})")
    test.add_argument("--appid", help="the app the push is for (default: the config's first)")
    test.add_argument("--openid", default="o_rules_test", help="the customer's openid")
    test.add_argument("--config", help=_CONFIG_HELP)
    test.add_argument("--function", action="append", default=[], metavar="NAME=JSON",
                      help="what cloud function NAME answers in this test (repeatable); "
                           "without it a call fails as an unknown function would")
    test.add_argument("--collection", action="append", default=[], metavar="NAME=JSON",
                      help="the records (a JSON list) of cloud collection NAME (repeatable)")
    test.set_defaults(handler=test_rules)


def check_rules(args: argparse.Namespace) -> int:
    path, routers, config, _ = _sources(args.config, args.file)
    router = _build(path, routers, config)
    names = router.rules
    print(f"{path}: ok, {len(names)} rules: {', '.join(rule.name for rule in names) or '-'}")
    return 0


def test_rules(args: argparse.Namespace) -> int:
    is_event = bool(args.event or args.session_from is not None)
    wanted = 1 if is_event else 2
    if len(args.args) > wanted or (not is_event and not args.args):
        print("usage: wxpush rules test [FILE] TEXT, or wxpush rules test [FILE] --event NAME",
              file=sys.stderr)
        return 2
    cloud = _stand_in(args)
    path, routers, config, first = _sources(args.config, args.args[0] if len(args.args) == wanted
                                            else None)
    router = _build(path, routers, config)
    appid = args.appid or first or "wx_rules_test"
    message = _message(args, None if is_event else args.args[-1])
    route = router.route(message, appid=appid)
    print(f"rules     {path}")
    print(f"routers   {', '.join(routers) or 'none'}"
          + (f" (from {config})" if config else f" (no {DEFAULT_CONFIG} here)"))
    print(f"push      {_describe(message)} appid={appid}")
    if not route:
        print("matched   nothing: the push is only acknowledged")
        return 0
    print(f"matched   {' -> '.join(route.names)}")
    print(f"answer    {'transfer_customer_service (to a human agent)' if route.transfer else 'success'}")
    logger = _logger()
    replies = route.run(message, appid=appid, clock=time.time, logger=logger, budget=3.0,
                        wechat=cloud)
    for name, data in cloud.function_calls:
        print(f"cloud     {name}({json.dumps(data, ensure_ascii=False)})")
    for statement in cloud.statements:
        print(f"cloud     {statement}")
    sends = [reply for _, reply in cloud.sent] + replies
    for reply in sends:
        print(f"send      {json.dumps(reply.payload(), ensure_ascii=False)}")
    if not sends:
        print("send      nothing")
    return 0


class _Shown(logging.Handler):
    """The handlers' log lines (a failed cloud call, say), in the output as they come."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"log       {record.getMessage()}")


def _logger() -> logging.Logger:
    logger = logging.getLogger("wxpush.rules.test")
    if not any(isinstance(handler, _Shown) for handler in logger.handlers):
        logger.addHandler(_Shown(logging.INFO))
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def _stand_in(args: argparse.Namespace) -> FakeWeChat:
    """The handlers' ctx.wechat: functions and collections as the flags say, nothing sent."""
    given: dict[str, dict[str, Any]] = {"function": {}, "collection": {}}
    for flag in given:
        for item in getattr(args, flag):
            name, sep, text = item.partition("=")
            try:
                value = json.loads(text) if sep and name else _UNSET
            except ValueError:
                value = _UNSET
            if value is _UNSET or (flag == "collection" and not (
                    isinstance(value, list) and all(isinstance(r, dict) for r in value))):
                what = "a JSON list of records" if flag == "collection" else "JSON"
                raise WxpushError(f"--{flag} {item!r}: expected NAME={what}")
            given[flag][name] = value
    return FakeWeChat(functions=given["function"], collections=given["collection"],
                      customer=args.openid)


def _sources(config: str | None, file: str | None
             ) -> tuple[str, tuple[str, ...], str | None, str | None]:
    """(rules file, routers, config file, its first appid) as the server would have them:
    FILE or the config's ``[server] rules`` (relative to the config), and the config's
    ``routers``, read without the settings loader so that no secret has to be in the
    environment. FILE with no config named and no ./wxpush.toml: the file alone."""
    path = config_path(config)
    if file and path == DEFAULT_CONFIG and not os.path.exists(path):
        return file, (), None, None
    doc = load_toml(path)
    server = doc.data.get("server", {})
    rules = server.get("rules")
    if file is None and (not isinstance(rules, str) or not rules):
        raise doc.error("no rules file: give FILE or set rules in [server]", table="server",
                        key="rules")
    routers = server.get("routers", [])
    if not isinstance(routers, list) or not all(isinstance(r, str) for r in routers):
        raise doc.error("must be a list of \"module:attribute\" strings", table="server",
                        key="routers")
    apps = doc.data.get("apps")
    first = apps[0] if isinstance(apps, list) and apps and isinstance(apps[0], dict) else {}
    appid = first.get("appid") if isinstance(first.get("appid"), str) else None
    return file or str(Path(path).resolve().parent / rules), tuple(routers), path, appid


def _build(path: str, routers: tuple[str, ...], config: str | None) -> Router:
    from handlers import build_router  # the server's own order of rules

    router = build_router(path, routers, config=config)
    router.compile()
    return router


def _message(args: argparse.Namespace, text: str | None) -> Message:
    common = {"to_user": "gh_0123456789ab", "from_user": args.openid,
              "create_time": int(time.time())}
    if text is not None:
        return TextMessage(msg_id=1, content=text, **common)
    if args.session_from is not None or args.event == ENTER_SESSION_EVENT:
        return EnterSessionEvent(session_from=args.session_from or "", **common)
    return Event(event=args.event, **common)


def _describe(message: Message) -> str:
    if isinstance(message, TextMessage):
        return f"text {message.content!r}"
    if isinstance(message, EnterSessionEvent):
        return f"event {message.event} session_from={message.session_from!r}"
    return f"event {getattr(message, 'event', '')}"
