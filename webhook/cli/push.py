"""``wxpush push URL``: send one push to a webhook exactly as WeChat would, show the answer and
what became of the replies.

The app comes from ``--config`` (the [[apps]] entry for ``--appid``, the URL's last path
segment, or the only app; flags override its values) or from flags alone. ``--retries N``
repeats the identical delivery N more times, as WeChat does when it gets no answer in 5 s.
``--emulator URL`` first tells a running emulator of the push, as WeChat knows of every
message a customer writes: that opens the customer's send window there, without which the
emulator refuses a reply to that customer (40003), as WeChat refuses one to a customer who
has not written. After the answer, the replies are followed for ``--wait`` seconds: in the
store the config names, else at the emulator. Exit status 1 if any delivery failed (no
answer, non-2xx, or a reply WeChat would refuse) or a reply was set aside as dead.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable
from typing import Any

import requests

from webhook.cli.replies import EmulatorReplies, Fate, StoreReplies, follow
from webhook.config import settings as settings_module
from webhook.config.settings import FORMATS, MODES, AppConfig
from webhook.errors import ConfigError, RequestRejected, UnknownApp, WxpushError
from webhook.logsafe import shown
from webhook.store import open_store
from webhook.testing.pushbuilder import DEFAULT_OPENID, BuiltPush, PushBuilder
from webhook.testing.remote import EmulatorControl

__all__ = ["register"]

ANSWER_TIMEOUT = 5.0    # WeChat hangs up after 5 s (docs/protocol.md §4.1)


def _field(value: str) -> tuple[str, str]:
    key, sep, text = value.partition("=")
    if not (key and sep):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    return key, text


def _count(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected a count >= 0, got {value!r}")
    return int(value)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("push", help="send a signed (and encrypted) push to a URL")
    parser.add_argument("url", help="the webhook, e.g. http://127.0.0.1:8000/wechat/wx123")
    parser.add_argument("--config", help="read appid/token/key/format/mode from this config")
    parser.add_argument("--appid")
    parser.add_argument("--token")
    parser.add_argument("--aes-key", help="the EncodingAESKey (43 characters)")
    parser.add_argument("--format", type=str.lower, choices=FORMATS)
    parser.add_argument("--mode", type=str.lower, choices=MODES,
                        help="default: safe with --aes-key, else plaintext")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", help="a text message")
    what.add_argument("--event", metavar="NAME", help="an event, e.g. user_enter_tempsession")
    what.add_argument("--image", metavar="MEDIA_ID", help="an image message")
    parser.add_argument("--session-from", default="", help="SessionFrom of user_enter_tempsession")
    parser.add_argument("--field", type=_field, action="append", default=[], metavar="KEY=VALUE",
                        help="an extra field of an --event push (repeatable)")
    parser.add_argument("--openid", default=DEFAULT_OPENID, help="the sender (FromUserName)")
    parser.add_argument("--retries", type=_count, default=0, metavar="N",
                        help="deliver the same push N more times (WeChat's retries)")
    parser.add_argument("--emulator", metavar="URL",
                        help="a wxpush emulator (the config's api_base): tell it of the push "
                             "first, which opens the customer's send window there; without it "
                             "the emulator refuses the reply (40003)")
    parser.add_argument("--wait", type=float, default=5.0, metavar="SECONDS",
                        help="follow the replies this long: in the config's store, else at "
                             "--emulator (default 5; 0: do not)")
    parser.set_defaults(handler=run)


def _app_config(args: argparse.Namespace) -> AppConfig:
    overrides = {name: value for name, value in (
        ("token", args.token), ("encoding_aes_key", args.aes_key), ("format", args.format),
        ("mode", args.mode)) if value is not None}
    if args.config:
        settings = settings_module.load(settings_module.config_path(args.config))
        appid = args.appid or args.url.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        if appid not in settings.apps and not args.appid and len(settings.apps) == 1:
            appid = next(iter(settings.apps))
        if appid not in settings.apps:
            raise UnknownApp(f"appid {appid!r} is not configured in {settings.path}")
        return dataclasses.replace(settings.apps[appid], **overrides)
    if not (args.appid and args.token):
        raise ConfigError("--appid and --token are required without --config")
    overrides.setdefault("mode", "safe" if args.aes_key else "plaintext")
    return AppConfig(appid=args.appid, **overrides)


def _build(builder: PushBuilder, args: argparse.Namespace) -> BuiltPush:
    if args.text is not None:
        return builder.text(args.text, openid=args.openid)
    if args.image is not None:
        return builder.image(args.image, openid=args.openid)
    fields: dict[str, Any] = dict(args.field)
    if args.event == "user_enter_tempsession":
        fields.setdefault("SessionFrom", args.session_from)
    return builder.event(args.event, openid=args.openid, **fields)


def run(args: argparse.Namespace) -> int:
    app = _app_config(args)
    try:
        builder = PushBuilder.for_app(app)
    except ValueError as exc:
        raise ConfigError(str(exc), key="mode") from None
    push = _build(builder, args)
    with contextlib.ExitStack() as stack:
        emulator = stack.enter_context(EmulatorControl(args.emulator)) if args.emulator else None
        if emulator is not None:
            try:
                emulator.notify_push(app.appid, push.fields)
            except (requests.RequestException, ValueError) as exc:
                print(f"wxpush push: could not notify the emulator: {exc}", file=sys.stderr)
                return 1
        replies, unfollowed = _replies(args, app.appid, emulator, stack) if args.wait > 0 \
            else (None, "")
        answered = 0
        with requests.Session() as session:
            for attempt in range(1, args.retries + 2):
                answered += _deliver(session, builder, push, args.url, attempt)
        dead = False
        if replies is not None and answered:
            dead = _show_fates(follow(replies, wait=args.wait), args.wait,
                               told_emulator=emulator is not None)
        elif unfollowed and answered:
            print(f"replies   not followed: {unfollowed}")
    return 1 if answered < args.retries + 1 or dead else 0


def _replies(args: argparse.Namespace, appid: str, emulator: EmulatorControl | None,
             stack: contextlib.ExitStack) -> tuple[Callable[[], list[Fate]] | None, str]:
    """Where the replies will be seen, from before the push: the config's store if it
    exists, else the emulator; or None and why not."""
    if args.config:
        url = settings_module.load(settings_module.config_path(args.config)).server.store
        if url.startswith("sqlite:") and not os.path.exists(url[len("sqlite:///"):]):
            return None, f"{url} does not exist (no server has run with this config)"
        try:
            store = open_store(url)
        except WxpushError as exc:
            return None, str(exc)
        stack.callback(store.close)
        return StoreReplies(store, appid, args.openid), ""
    if emulator is not None:
        return EmulatorReplies(emulator, appid, args.openid), ""
    return None, "give --config (or --emulator) to see them"


def _show_fates(fates: list[Fate], wait: float, *, told_emulator: bool) -> bool:
    """Print each reply's fate; True if one is dead."""
    if not fates:
        print(f"replies   none within {wait:g} s (no rule answered the push, or no process "
              "handled it)")
    for fate in fates:
        error = f" errcode={fate.errcode}" if fate.errcode is not None else ""
        error += f" {shown(fate.errmsg)}" if fate.errmsg else ""
        state = fate.state if fate.settled else f"{fate.state} after {wait:g} s"
        print(f"{fate.name}: {state}{error}  {fate.text}")
        if fate.state == "dead" and fate.errcode == 40003 and not told_emulator:
            print("  40003: WeChat sends only to a customer who wrote in the last 48 hours; "
                  "an emulator knows of the customer once told: add --emulator URL")
    return any(fate.state == "dead" for fate in fates)


def _deliver(session: requests.Session, builder: PushBuilder, push: BuiltPush, url: str,
             attempt: int) -> bool:
    """POST once and print the outcome; True if WeChat would count it as answered."""
    try:
        answer = session.post(push.url(url), data=push.body, timeout=ANSWER_TIMEOUT,
                              headers={"Content-Type": push.content_type})
    except requests.Timeout:
        print(f"delivery {attempt}: no answer within {ANSWER_TIMEOUT:g} s")
        return False
    except requests.ConnectionError as exc:
        print(f"delivery {attempt}: connection failed: {type(exc).__name__}")
        return False
    print(f"delivery {attempt}: HTTP {answer.status_code} {answer.text}")
    if not 200 <= answer.status_code < 300:
        return False
    try:
        fields = builder.open_reply(answer.content, push)
    except RequestRejected as exc:
        print(f"  reply refused: {exc.reason}")
        return False
    if fields and b"Encrypt" in answer.content:
        print(f"  decrypted reply: {fields}")
    return True
