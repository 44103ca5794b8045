"""Testing helpers for wxpush and for bots built on it (as ``falcon.testing`` is for Falcon).

- ``Emulator``: WeChat's server API with WeChat's rules, as a Falcon app; ``serve()`` runs it
  (or any WSGI app) on 127.0.0.1; ``EmulatorControl`` drives one in another process.
- ``PushBuilder``: signed, encrypted pushes exactly as WeChat sends them.
- ``FakeClock``: time that moves only when a test says so.
- ``FakeWeChat``: a handler's ``ctx.wechat`` that records sends, typing and cloud calls and
  answers from functions and collections the test gives (``dispatch(..., wechat=fake)``).

A bot test in a few lines::

    emulator = Emulator(clock=clock)
    emulator.register_app("wx123", "secret")
    with serve(emulator.app) as wechat:       # point [server] api_base at wechat.url
        push = PushBuilder(appid="wx123", token="tok", encoding_aes_key=KEY).text("hi")
        emulator.notify_push("wx123", push.fields)  # WeChat saw the message: window opens
        client.simulate_post("/wechat/wx123", query_string=urlencode(push.query),
                             body=push.body)
        ...
        assert emulator.sent("wx123") == [("wx123", push.fields["FromUserName"], {...})]
"""

from webhook.testing.clock import FakeClock
from webhook.testing.emulator import Call, Emulator
from webhook.testing.factories import (dispatch, make_enter_session, make_event, make_image,
                                       make_miniprogrampage, make_text, make_unknown)
from webhook.testing.fakewechat import FakeWeChat
from webhook.testing.pushbuilder import DEFAULT_OPENID, BuiltPush, PushBuilder
from webhook.testing.remote import EmulatorControl
from webhook.testing.server import RunningServer, serve

__all__ = ["Emulator", "Call", "EmulatorControl", "serve", "RunningServer", "PushBuilder",
           "BuiltPush", "DEFAULT_OPENID", "FakeClock", "FakeWeChat", "make_text", "make_image",
           "make_miniprogrampage", "make_event", "make_enter_session", "make_unknown", "dispatch"]
