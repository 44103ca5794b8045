"""``wxpush push URL``: send one push to a webhook exactly as WeChat would, and show the answer.

The app comes from ``--config`` (the [[apps]] entry for ``--appid``, the URL's last path
segment, or the only app; flags override its values) or from flags alone. ``--retries N``
repeats the identical delivery N more times, as WeChat does when it gets no answer in 5 s;
``--emulator URL`` first tells a running emulator about the push so its quota windows open.
Exit status 1 if any delivery failed (no answer, non-2xx, or a reply WeChat would refuse).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

import requests

from webhook.config import settings as settings_module
from webhook.config.settings import FORMATS, MODES, AppConfig
from webhook.errors import ConfigError, RequestRejected, UnknownApp
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
    parser.add_argument("--emulator", metavar="URL", help="tell this emulator about the push first")
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
    if args.emulator:
        try:
            with EmulatorControl(args.emulator) as emulator:
                emulator.notify_push(app.appid, push.fields)
        except (requests.RequestException, ValueError) as exc:
            print(f"wxpush push: could not notify the emulator: {exc}", file=sys.stderr)
            return 1
    failed = False
    with requests.Session() as session:
        for attempt in range(1, args.retries + 2):
            failed |= not _deliver(session, builder, push, args.url, attempt)
    return 1 if failed else 0


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
