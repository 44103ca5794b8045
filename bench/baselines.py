"""The two baselines of ``bench/push_throughput.py``, served by gunicorn with the project's
``gunicorn.conf.py`` (the positional APP_MODULE overrides its ``wsgi_app``):

    gunicorn -c gunicorn.conf.py 'bench.baselines:floor()'      # answers success, checks nothing
    gunicorn -c gunicorn.conf.py 'bench.baselines:wechatpy()'   # wechatpy verify + decrypt + parse

The app's token, EncodingAESKey and appid come from BENCH_TOKEN / BENCH_AES_KEY / BENCH_APPID.
Both apps have a no-op ``start``/``stop``, which gunicorn.conf.py's worker hooks call, and
wxpush's ``inline_paths`` (webhook/server/fairworker.py): like its push path, theirs waits on
nothing but the CPU.
"""

from __future__ import annotations

import os
import warnings

import falcon


class _BenchApp(falcon.App):
    inline_paths = ("/wechat/",)

    def start(self) -> None:
        """gunicorn.conf.py's post_worker_init starts wxpush's background work: none here."""

    def stop(self, timeout: float = 10.0) -> None:
        """gunicorn.conf.py's worker_exit stops it: nothing to stop."""


class _Floor:
    def on_post(self, req: falcon.Request, resp: falcon.Response, appid: str) -> None:
        req.bounded_stream.read()
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "success"


class _WeChatPy:
    """What a wechatpy-based webhook does per push: URL signature, msg_signature + decrypt
    (WeChatCrypto.decrypt_message), parse_message; then answers success."""

    def __init__(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from wechatpy import parse_message
            from wechatpy.crypto import WeChatCrypto
            from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException
            from wechatpy.utils import check_signature
        self._parse, self._check = parse_message, check_signature
        self._rejected = (InvalidSignatureException, InvalidAppIdException)
        self._token, self._appid = os.environ["BENCH_TOKEN"], os.environ["BENCH_APPID"]
        self._crypto = WeChatCrypto(self._token, os.environ["BENCH_AES_KEY"], self._appid)

    def on_post(self, req: falcon.Request, resp: falcon.Response, appid: str) -> None:
        if appid != self._appid:
            raise falcon.HTTPNotFound()
        params = req.params
        body = req.bounded_stream.read()
        try:
            self._check(self._token, params["signature"], params["timestamp"], params["nonce"])
            xml = self._crypto.decrypt_message(body, params["msg_signature"],
                                               params["timestamp"], params["nonce"])
        except (KeyError, *self._rejected):
            raise falcon.HTTPForbidden() from None
        self._parse(xml)
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "success"


def floor() -> falcon.App:
    app = _BenchApp(media_type=falcon.MEDIA_TEXT)
    app.add_route("/wechat/{appid}", _Floor())
    return app


def wechatpy() -> falcon.App:
    app = _BenchApp(media_type=falcon.MEDIA_TEXT)
    app.add_route("/wechat/{appid}", _WeChatPy())
    return app
