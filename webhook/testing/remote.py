"""``EmulatorControl``: drive an emulator running in another process through ``/_emulator/``."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any

import requests

from webhook.push.messages import Message
from webhook.testing.emulator import Call

__all__ = ["EmulatorControl"]


class EmulatorControl:
    """The ``Emulator`` control methods, over HTTP. ``base_url`` like ``http://127.0.0.1:9000``."""

    def __init__(self, base_url: str, *, session: requests.Session | None = None,
                 timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session or requests.Session()
        self._timeout = timeout

    def _call(self, method: str, route: str, body: Mapping[str, Any] | None = None,
              params: Mapping[str, Any] | None = None) -> Any:
        answer = self._session.request(method, f"{self.base_url}/_emulator{route}", json=body,
                                       params={k: v for k, v in (params or {}).items()
                                               if v is not None},
                                       timeout=self._timeout)
        if answer.status_code != 200:
            raise ValueError(f"emulator {route}: HTTP {answer.status_code} {answer.text}")
        return answer.json()

    def ping(self) -> float:
        """The emulator's current time; raises if it is not up."""
        return float(self._call("GET", "")["now"])

    def register_app(self, appid: str, secret: str) -> None:
        self._call("POST", "/apps", {"appid": appid, "secret": secret})

    def notify_push(self, appid: str, message: Message | Mapping[str, Any]) -> None:
        if isinstance(message, Message):
            message = {"FromUserName": message.from_user, "MsgType": message.msg_type,
                       "CreateTime": message.create_time,
                       "Event": getattr(message, "event", None)}
        self._call("POST", "/push", {"appid": appid, "fields": dict(message)})

    def calls(self, path: str | None = None, *, appid: str | None = None) -> list[Call]:
        rows = self._call("GET", "/calls", params={"path": path, "appid": appid})["calls"]
        return [Call(**row) for row in rows]

    def sent(self, appid: str | None = None) -> list[tuple[str, str, dict[str, Any]]]:
        rows = self._call("GET", "/sent", params={"appid": appid})["sent"]
        return [(r["appid"], r["touser"], r["payload"]) for r in rows]

    def token_fetches(self, appid: str) -> dict[str, int]:
        return self._call("GET", "/token_fetches", params={"appid": appid})

    def set_faults(self, *, errcode_rate: float = 0.0, http502_rate: float = 0.0,
                   delay_rate: float = 0.0, delay_seconds: float = 0.0,
                   force_40001_rate: float = 0.0, paths: tuple[str, ...] = (),
                   latency: float = 0.0) -> None:
        self._call("POST", "/faults", {
            "errcode_rate": errcode_rate, "http502_rate": http502_rate,
            "delay_rate": delay_rate, "delay_seconds": delay_seconds,
            "force_40001_rate": force_40001_rate, "paths": list(paths), "latency": latency})

    def fail_next(self, path: str, *, errcode: int | None = None,
                  http_status: int | None = None, times: int = 1) -> None:
        self._call("POST", "/fail_next", {"path": path, "errcode": errcode,
                                          "http_status": http_status, "times": times})

    def reset(self) -> None:
        self._call("POST", "/reset", {})

    def advance(self, seconds: float) -> None:
        self._call("POST", "/advance", {"seconds": seconds})

    def login_code(self, appid: str, openid: str) -> str:
        return self._call("POST", "/login_code", {"appid": appid, "openid": openid})["code"]

    def encrypted_data(self, appid: str, openid: str, data: dict[str, Any]) -> tuple[str, str]:
        answer = self._call("POST", "/encrypted_data",
                            {"appid": appid, "openid": openid, "data": data})
        return answer["encryptedData"], answer["iv"]

    def raw_signature(self, appid: str, openid: str, raw_data: str) -> str:
        return self._call("POST", "/raw_signature",
                          {"appid": appid, "openid": openid, "raw_data": raw_data})["signature"]

    def cloud_id(self, appid: str, openid: str, data: dict[str, Any]) -> str:
        return self._call("POST", "/cloud_id",
                          {"appid": appid, "openid": openid, "data": data})["cloud_id"]

    def phone_code(self, appid: str, openid: str, phone: str) -> str:
        return self._call("POST", "/phone_code",
                          {"appid": appid, "openid": openid, "phone": phone})["code"]

    def add_cloud_env(self, appid: str, env: str, *, demo: bool = False,
                      collections: dict[str, list[dict[str, Any]]] | None = None) -> None:
        """A cloud environment for ``appid``; ``demo``: with the demo's functions and FAQ."""
        self._call("POST", "/cloud_env", {"appid": appid, "env": env, "demo": demo,
                                          "collections": collections or {}})

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> EmulatorControl:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
