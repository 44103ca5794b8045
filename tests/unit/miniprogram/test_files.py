"""GET /files/{appid}/{file ID}: a redirect to a fresh download link, kept until shortly before
it expires, for allowed prefixes only; against the emulator and a real store."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import falcon
import falcon.testing
import pytest
import requests

from webhook.config.settings import AppConfig, ServerConfig, Settings
from webhook.miniprogram import files
from webhook.miniprogram.files import MARGIN, file_id
from webhook.testing import Emulator, serve
from webhook.wechat.api import WeChatAPI
from webhook.wechat.client import WeChatClient
from webhook.wechat.cloud import LINK_LIFETIME
from webhook.wechat.tokens import TokenProvider

APPID, SECRET, ENV = "wxfiles0123456789", "secret", "shop-1"
BUCKET = f"{ENV}.7368-{ENV}"
PUBLIC = f"cloud://{BUCKET}/public/"
LINKS = "/tcb/batchdownloadfile"


@dataclass
class World:
    client: falcon.testing.TestClient
    emulator: Emulator
    clock: Any

    def get(self, rest: str, **kwargs: Any) -> falcon.testing.Result:
        return self.client.simulate_get(f"/files/{APPID}/{rest}", **kwargs)

    def links(self) -> int:
        return len(self.emulator.calls(LINKS))


def build(store, clock, url, http, **server: Any) -> falcon.App:
    apps = {APPID: AppConfig(appid=APPID, token="t", secret=SECRET, mode="plaintext",
                             cloud_env=ENV, files=(PUBLIC,))}
    settings = Settings(server=ServerConfig(api_base=url, **server), apps=apps)
    wechat = WeChatClient(url, session=http)
    api = WeChatAPI(wechat, TokenProvider(store, wechat, apps, clock=clock), store)
    app = falcon.App()
    files.register(app, settings=settings, api=api, store=store, clock=clock)
    return app


@pytest.fixture
def emulator(clock) -> Emulator:
    emulator = Emulator(clock=clock)
    emulator.register_app(APPID, SECRET)
    emulator.add_cloud_env(APPID, ENV)
    emulator.put_file(ENV, "public/菜单 1.png", b"PNG menu")
    emulator.put_file(ENV, "private/secret.txt", b"secret")
    return emulator


@pytest.fixture
def world(store, clock, emulator) -> Iterator[World]:
    with serve(emulator.app) as running, requests.Session() as http:
        yield World(falcon.testing.TestClient(build(store, clock, running.url, http)), emulator,
                    clock)


def test_a_permanent_link_redirects_to_a_working_download_until_it_is_renewed(world):
    answer = world.get(f"{BUCKET}/public/%E8%8F%9C%E5%8D%95%201.png")
    assert answer.status_code == 302
    assert requests.get(answer.headers["Location"], timeout=5).content == b"PNG menu"
    assert answer.headers["Cache-Control"] == f"private, max-age={LINK_LIFETIME - MARGIN}"
    assert world.emulator.calls(LINKS)[0].body["file_list"] == [
        {"fileid": f"{PUBLIC}菜单 1.png", "max_age": LINK_LIFETIME}]
    world.clock.advance(LINK_LIFETIME - MARGIN - 1)
    again = world.get(f"{BUCKET}/public/菜单 1.png")
    assert again.headers["Location"] == answer.headers["Location"] and world.links() == 1
    assert again.headers["Cache-Control"] == "private, max-age=1"
    world.clock.advance(2)   # the cached link would expire within MARGIN: a fresh one
    renewed = world.get(f"cloud://{BUCKET}/public/菜单 1.png")
    assert world.links() == 2 and renewed.status_code == 302
    assert requests.get(renewed.headers["Location"], timeout=5).content == b"PNG menu"


def test_the_emulators_link_itself_expires(world):
    answer = world.get(f"{BUCKET}/public/菜单 1.png")
    world.emulator.advance(LINK_LIFETIME + 1)
    assert requests.get(answer.headers["Location"], timeout=5).status_code == 403


@pytest.mark.parametrize("rest, status", [
    (f"{BUCKET}/private/secret.txt", 403),
    (f"{BUCKET}/public/../private/secret.txt", 400),
    (f"{BUCKET}/public//x.png", 400),
    (f"{BUCKET}/public/a%0Ab.png", 400),
    ("other-env.7072-other-env/public/x.png", 403),
    ("public", 400),
])
def test_a_file_outside_the_prefixes_is_refused_without_calling_wechat(world, rest, status):
    answer = world.get(rest)
    assert answer.status_code == status and answer.headers["Content-Type"].startswith(
        "text/plain")
    assert world.links() == 0


def test_unknown_app_and_missing_file(world):
    assert world.client.simulate_get(f"/files/wxnope/{BUCKET}/public/x.png").status_code == 404
    assert world.links() == 0
    missing = world.get(f"{BUCKET}/public/none.png")
    assert (missing.status_code, missing.text) == (404, "no such file")


def test_only_requests_that_ask_wechat_are_rate_limited(store, clock, emulator):
    with serve(emulator.app) as running, requests.Session() as http:
        world = World(falcon.testing.TestClient(build(store, clock, running.url, http,
                                                      burst_per_client=2)), emulator, clock)
        for _ in range(5):   # one link asked, four from the store
            assert world.get(f"{BUCKET}/public/菜单 1.png").status_code == 302
        assert world.get(f"{BUCKET}/public/a.png").status_code == 404
        limited = world.get(f"{BUCKET}/public/b.png")
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
        assert world.links() == 2


def test_wechat_down_is_503(world):
    world.emulator.fail_next(LINKS, http_status=502)
    answer = world.get(f"{BUCKET}/public/菜单 1.png")
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"


def test_file_ids_from_paths():
    assert file_id(f"{BUCKET}/a/b.png") == f"cloud://{BUCKET}/a/b.png"
    assert file_id(f"cloud:/{BUCKET}/a.png") == file_id(f"cloud://{BUCKET}/a.png") == \
        f"cloud://{BUCKET}/a.png"
