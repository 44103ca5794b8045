"""``wxpush demo``: the WeChat API emulator, a server and a short scripted conversation, with
what the customer would see printed. An order is looked up by the emulator's ``orderStatus``
cloud function and the shipping fee read from its ``faq`` collection. Nothing leaves this
machine. ``--keep-running`` keeps them up afterwards with the console on, for an operator
whose one-time password it prints: the conversation is there to follow in a browser, and
answers reach the demo customer."""

from __future__ import annotations

import argparse
import secrets
import tempfile
import time
from pathlib import Path

import requests

__all__ = ["register"]

APPID = "wxd0d0d0d0d0d0d0d0"
SECRET = "demo-secret"
TOKEN = "demotoken"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
CLOUD_ENV = "demo-cloud-1"
RULES = """
[[rule]]
name = "hours"
keywords = ["营业时间", "几点开门"]
reply.text = "我们的服务时间是 9:00–18:00。"

[[rule]]
name = "order"
regex = '^订单\\s*(?P<order>\\d{6,})$'
function = { name = "orderStatus", data = { order = "{order}", openid = "{openid}" } }
reply.text = "订单 {order}：{result.status}，预计 {result.eta} 送达。"
reply.on_error = "暂时查不到订单 {order}，请稍后再试。"

[[rule]]
name = "shipping"
keywords = ["运费"]
query = { collection = "faq", where = { key = "shipping" }, limit = 1 }
reply.text = "{result[0].answer}"

[builtins.welcome]
text = "您好，请问有什么可以帮您？"

[builtins.fallback]
text = "抱歉，我没听懂。输入「人工」可转人工客服。"
"""
SCRIPT = [("enter", ""), ("text", "几点开门？"), ("text", "订单 20261121"), ("text", "运费怎么算？"),
          ("text", "你好"), ("text", "转人工")]


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
    from webhook.testing import Emulator, PushBuilder, serve
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
        (Path(tmp) / "rules.toml").write_text(RULES, encoding="utf-8")
        config.write_text(
            f'[server]\napi_base = "{upstream.url}"\nstore = "sqlite:///demo.db"\n'
            f'rules = "rules.toml"\n\n[[apps]]\nappid = "{APPID}"\nsecret = "{SECRET}"\n'
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
            with serve(app, port=args.port) as server:
                print(f"emulator {upstream.url}   server {server.url}/wechat/{APPID} (safe mode, XML)")
                if password is not None:
                    print(f"console  {server.url}/console/   operator demo, password {password} "
                          "(this run only)")
                print(flush=True)
                seen = _converse(emulator, PushBuilder(appid=APPID, token=TOKEN,
                                                       encoding_aes_key=AES_KEY),
                                 f"{server.url}/wechat/{APPID}")
                if password is not None:
                    _keep_running(emulator, seen, f"{server.url}/console/", password)
        finally:
            background.stop()
            history.stop()
            app.stop()
            store.close()
    return 0


def _keep_running(emulator, seen: int, url: str, password: str) -> None:
    """Print what reaches the customer (an operator's answers) until Ctrl-C."""
    print(f"The server keeps running. Open {url} and log in as demo with the password "
          f"{password}:\nthe conversation is under Conversations and Needs a human; what you "
          "answer is printed here. Ctrl-C stops.\n", flush=True)
    try:
        while True:
            time.sleep(0.2)
            sent = emulator.sent(APPID)
            for _, _, payload in sent[seen:]:
                print(f"business  {payload.get('text', {}).get('content', payload)}", flush=True)
            seen = len(sent)
    except KeyboardInterrupt:
        print("stopped")


def _converse(emulator, builder, url: str) -> int:
    """Play the script; how many messages reached the customer."""
    session, openid, seen = requests.Session(), "o_demo_customer", 0
    for step, (kind, text) in enumerate(SCRIPT):
        now = int(time.time())
        if kind == "enter":
            fields = {"ToUserName": builder.original_id, "FromUserName": openid, "CreateTime": now,
                      "MsgType": "event", "Event": "user_enter_tempsession", "SessionFrom": ""}
            print("customer  (opens the chat)")
        else:
            fields = {"ToUserName": builder.original_id, "FromUserName": openid, "CreateTime": now,
                      "MsgType": "text", "Content": text, "MsgId": 1000 + step}
            print(f"customer  {text}")
        emulator.notify_push(APPID, fields)
        push = builder.build(fields)
        answer = session.post(url, params=push.query, data=push.body, timeout=5)
        if answer.text != "success":
            reply = builder.open_reply(answer.content)
            print(f"wxpush    (answers WeChat: {reply['MsgType']}, the chat goes to a human agent)")
        deadline = time.monotonic() + (5 if answer.text == "success" else 0.5)
        while time.monotonic() < deadline:
            sent = emulator.sent(APPID)
            if len(sent) > seen:
                break
            time.sleep(0.02)
        for _, _, payload in sent[seen:]:
            print(f"business  {payload.get('text', {}).get('content', payload)}")
        seen = len(sent)
        print(flush=True)
    return seen
