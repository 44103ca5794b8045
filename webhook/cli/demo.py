"""``wxpush demo``: the WeChat API emulator, a server and a scripted customer, with what the
customer, and then the mini program's front end, would see printed. The server answers with
the rules of rules.example.toml (``webhook/examples/``, images beside it), its cloud rules
turned on: an order is looked up by the emulator's ``orderStatus`` cloud function and the
shipping fee read from its ``faq`` collection. The same customer then logs in to the mini
program and has open data and a phone number decoded, each a request to the server's
endpoints with values the emulator's control routes make. Nothing leaves this machine.
``--keep-running`` keeps them up afterwards with the console on, for an operator whose
one-time password it prints: the conversation is there to follow in a browser, and answers
reach the demo customer."""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from webhook.errors import WxpushError

__all__ = ["register"]

APPID = "wxd0d0d0d0d0d0d0d0"
SECRET = "demo-secret"
TOKEN = "demotoken"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
CLOUD_ENV = "demo-cloud-1"
OPENID = "o_demo_customer"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"   # package data
RULES = "rules.example.toml"
SCRIPT = [("enter", ""), ("text", "几点开门？"), ("text", "查订单 20261121"), ("text", "运费怎么算？"),
          ("text", "有菜单吗？"), ("text", "会员"), ("text", "怎么下单？"), ("text", "你好"),
          ("text", "转人工")]
PNG = b"\x89PNG\r\n\x1a\n"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="emulator + server + a scripted conversation")
    parser.add_argument("--keep-running", action="store_true",
                        help="afterwards, keep the server and its console up (Ctrl-C stops)")
    parser.add_argument("--port", type=int, default=0,
                        help="the server's port on 127.0.0.1 (default: a free one)")
    parser.set_defaults(handler=demo)


def demo(args: argparse.Namespace) -> int:
    from webhook.config.settings import load
    from webhook.passwords import hash_password
    from webhook.delivery.history import History
    from webhook.server.app import create_app, create_background, parts
    from webhook.testing import Emulator, EmulatorControl, PushBuilder, serve
    from webhook.testing.emulator.cloud import DEMO_COLLECTIONS, DEMO_FUNCTIONS

    emulator = Emulator()
    emulator.register_app(APPID, SECRET)
    emulator.add_cloud_env(APPID, CLOUD_ENV, functions=DEMO_FUNCTIONS,
                           collections=DEMO_COLLECTIONS)
    password = secrets.token_urlsafe(12) if args.keep_running else None
    operator = "" if password is None else (
        f'\n[[console.operators]]\nname = "demo"\npassword_hash = "{hash_password(password)}"\n')
    with tempfile.TemporaryDirectory() as tmp, serve(emulator.app) as upstream:
        config = Path(tmp) / "wxpush.toml"
        _rules_with_cloud(Path(tmp) / "rules")
        config.write_text(
            f'[server]\napi_base = "{upstream.url}"\nstore = "sqlite:///demo.db"\n'
            f'rules = "rules/{RULES}"\n\n[[apps]]\nappid = "{APPID}"\nsecret = "{SECRET}"\n'
            f'token = "{TOKEN}"\nencoding_aes_key = "{AES_KEY}"\nformat = "xml"\nmode = "safe"\n'
            f'cloud_env = "{CLOUD_ENV}"\n' + operator,
            encoding="utf-8")
        settings = load(str(config))
        store, api, router = parts(settings)
        app = create_app(settings, store=store, api=api, router=router)
        history = History(store, days=settings.server.history_days)
        background = create_background(settings, store=store, api=api, router=router,
                                       history=history)
        app.start()
        background.start()   # the delivery process's work, here in the same process
        history.start()
        try:
            with serve(app, port=args.port) as server, \
                    EmulatorControl(upstream.url) as control:
                print(f"emulator {upstream.url}   server {server.url}/wechat/{APPID} (safe mode, XML)")
                print(f"rules    {_near(EXAMPLES / RULES)}, its cloud rules turned on (this "
                      "demo has a cloud environment)")
                if password is not None:
                    print(f"console  {server.url}/console/   operator demo, password {password} "
                          "(this run only)")
                print(flush=True)
                seen = _converse(emulator, store, PushBuilder(appid=APPID, token=TOKEN,
                                                              encoding_aes_key=AES_KEY),
                                 f"{server.url}/wechat/{APPID}")
                _front_end(control, server.url, f"/apps/{APPID}")
                _next_steps()
                if password is not None:
                    _keep_running(emulator, seen, f"{server.url}/console/", password)
        finally:
            background.stop()
            history.stop()
            app.stop()
            store.close()
    return 0


def _rules_with_cloud(target: Path) -> None:
    """The example's rules and images, copied to ``target``, with the rules that ask the cloud
    (off in the example, which has no cloud_env) turned on."""
    from webhook.config.tomlfile import load_toml

    doc = load_toml(EXAMPLES / RULES)     # one line, not a traceback, if the install lacks it
    shutil.copytree(EXAMPLES, target)
    lines = list(doc.lines)
    for index, rule in enumerate(doc.data.get("rule", [])):
        if rule.get("enabled") is False and ("function" in rule or "query" in rule):
            lines[doc.line_of("rule", index, "enabled") - 1] = ""
    (target / RULES).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _keep_running(emulator, seen: int, url: str, password: str) -> None:
    """Print what reaches the customer (an operator's answers) until Ctrl-C."""
    print(f"\nThe server keeps running. Open {url} and log in as demo with the password "
          f"{password}:\nthe conversation is under Conversations and Needs a human; what you "
          "answer is printed here. Ctrl-C stops.\n", flush=True)
    try:
        while True:
            time.sleep(0.2)
            sent = emulator.sent(APPID)
            for _, _, payload in sent[seen:]:
                print(f"business  {_shown(emulator, payload)}", flush=True)
            seen = len(sent)
    except KeyboardInterrupt:
        print("stopped")


def _converse(emulator, store, builder, url: str) -> int:
    """Play the script; how many messages reached the customer. Each step waits until the
    push's replies are settled in the outbox (queued together, so all there at once)."""
    from webhook.cli.replies import StoreReplies, follow

    session, seen = requests.Session(), 0
    for kind, text in SCRIPT:
        if kind == "enter":
            push = builder.enter_session(OPENID)
            print("customer  (opens the chat)")
        else:
            push = builder.text(text, openid=OPENID)
            print(f"customer  {text}")
        emulator.notify_push(APPID, push.fields)
        replies = StoreReplies(store, APPID, OPENID)
        answer = session.post(url, params=push.query, data=push.body, timeout=5)
        if answer.text != "success":
            reply = builder.open_reply(answer.content)
            print(f"wxpush    (answers WeChat: {reply['MsgType']}, the chat goes to a human agent)")
        fates = follow(replies, wait=5 if answer.text == "success" else 0.5, settle=0)
        sent = emulator.sent(APPID)
        for _, _, payload in sent[seen:]:
            print(f"business  {_shown(emulator, payload)}")
        for fate in fates:
            if fate.state != "sent":
                print(f"wxpush    (a reply is {fate.state}, errcode {fate.errcode}: {fate.text})")
        seen = len(sent)
        print(flush=True)
    return seen


def _shown(emulator, payload: dict[str, Any]) -> str:
    """What the customer sees of a message WeChat delivered (one of the four kinds it takes,
    its fields checked)."""
    kind = payload["msgtype"]
    part = payload[kind]
    if kind == "image":
        return f"[image: {_picture(emulator, part['media_id'])}]"
    if kind == "link":
        return f"[link: {part['title']} · {part['description']} → {part['url']}]"
    if kind == "miniprogrampage":
        return (f"[mini program card: {part['title']} → {part['pagepath']}, cover "
                f"{_picture(emulator, part['thumb_media_id'])}]")
    return part["content"]


def _picture(emulator, media_id: str) -> str:
    """An image as WeChat holds it, uploaded by the server: its size from the file's header."""
    from webhook.testing.emulator.media import find_media

    with emulator.lock:
        item = find_media(emulator, APPID, media_id)
    if item is None:
        return f"media {media_id}, which WeChat does not have"
    if item.data.startswith(PNG) and len(item.data) >= 24:
        width, height = struct.unpack(">II", item.data[16:24])
        return f"{width}×{height} PNG, {len(item.data)} bytes"
    return f"{item.content_type}, {len(item.data)} bytes"


def _front_end(control, server: str, path: str) -> None:
    """The same customer in the shop's mini program: its front end logs in with a wx.login()
    code, then has wxpush open what WeChat handed it (werun steps, a phone number)."""
    print("The same customer in the mini program; what its front end gets from wxpush:")
    with requests.Session() as http:
        print(f"front end wx.login() code → POST {path}/login")
        login = _post(http, server + path + "/login",
                      {"code": control.login_code(APPID, OPENID)})
        shown = {**login, "session": login["session"][:4] + "…"}     # a credential: cut short
        print(f"wxpush    {json.dumps(shown, ensure_ascii=False)} (the session_key stays on the "
              "server)")
        day = int(time.time()) // 86400 * 86400 - 8 * 3600    # midnight in China
        sealed, iv = control.encrypted_data(APPID, OPENID, {"stepInfoList": [
            {"timestamp": day - 86400, "step": 6230}, {"timestamp": day, "step": 8012}]})
        print(f"front end wx.getWeRunData() encryptedData → POST {path}/opendata with the session")
        steps = _post(http, server + path + "/opendata", {"encryptedData": sealed, "iv": iv},
                      headers={"Authorization": f"Bearer {login['session']}"})
        print(f"wxpush    {json.dumps(steps, ensure_ascii=False)}")
        print(f"front end getPhoneNumber button code → POST {path}/phone")
        phone = _post(http, server + path + "/phone",
                      {"code": control.phone_code(APPID, OPENID, "13800138000")})
        print(f"wxpush    {json.dumps(phone, ensure_ascii=False)}")
    print(flush=True)


def _post(http: requests.Session, url: str, body: dict[str, Any], *,
          headers: dict[str, str] | None = None) -> dict[str, Any]:
    answer = http.post(url, json=body, headers=headers, timeout=10)
    if answer.status_code != 200:
        raise WxpushError(f"POST {url}: HTTP {answer.status_code} {answer.text[:200]}")
    return answer.json()


def _next_steps() -> None:
    """What to type next. A checkout has the example config beside the package, to serve
    as it is; an installed wheel does not (the README says how to write one)."""
    config = EXAMPLES.parents[1] / "wxpush.example.toml"
    if config.is_file():
        print(f"next      wxpush serve --config {_near(config)}: your own server with these "
              "rules;\n          fill in its [[apps]] table from the mini program console (README "
              "\"Configure\")")
    else:
        print("next      wxpush serve --config wxpush.toml: your own server, with a wxpush.toml "
              "written\n          as README \"Configure\" says (rules = \"rules.example.toml\")")
    print(f"          the rules: {_near(EXAMPLES / RULES)} (its images beside it):\n"
          "          edit a copy, try it with wxpush rules test FILE 菜单 (README \"Rules\")\n"
          "          the front end's endpoints: README \"Mini program login, open data and "
          "phone numbers\"", flush=True)


def _near(path: Path) -> Path:
    """``path`` relative to the working directory when it is under it."""
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
