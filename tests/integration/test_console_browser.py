"""The console in a real headless Chromium (Debian's, driven by Playwright) against a real
``wxpush serve`` and the WeChat emulator: what an operator does, as an operator does it.
Screenshots of the main pages go to tests/artifacts/ (not committed)."""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from webhook.passwords import Scrypt, hash_password
from webhook.testing import PushBuilder

from harness import AES_KEY, APPID, TOKEN, EmulatorServer, ServerProcess, wait_for

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run"]
ARTIFACTS = Path(__file__).parents[1] / "artifacts"
PASSWORD = "a long console password"
XSS = "<img src=x onerror=alert(1)>"
RULES = """
[[rule]]
name = "hours"
keywords = ["几点"]
reply.text = "我们 9:00-18:00 营业。"

[builtins.handoff]
keywords = ["人工"]

[builtins.fallback]
text = "抱歉，我没听懂。"
"""
SEND = "/cgi-bin/message/custom/send"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"chromium is not installed ({CHROMIUM}; apt-get install chromium): the "
                    "console's browser tests run it headless", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed (pip install -e '.[test]')", pytrace=False)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def wechat() -> Iterator[EmulatorServer]:
    server = EmulatorServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, wechat) -> Iterator[ServerProcess]:
    hashed = hash_password(PASSWORD, cost=Scrypt(n=1 << 12))
    proc = ServerProcess(tmp_path_factory.mktemp("console"), store="sqlite:///wxpush.db",
                         api_base=wechat.url, rules=RULES, workers=1,
                         apps=f'\n[[console.operators]]\nname = "ana"\n'
                              f'password_hash = "{hashed}"\n')
    proc.start()
    yield proc
    proc.stop()


class Customer:
    """A customer writing to the shop: WeChat learns of the message, then pushes it."""

    def __init__(self, wechat: EmulatorServer, server: ServerProcess, openid: str) -> None:
        self.wechat, self.server, self.openid = wechat, server, openid
        self.builder = PushBuilder(appid=APPID, token=TOKEN, encoding_aes_key=AES_KEY)

    def says(self, text: str) -> None:
        fields = {"ToUserName": self.builder.original_id, "FromUserName": self.openid,
                  "CreateTime": int(time.time()), "MsgType": "text", "Content": text,
                  "MsgId": time.time_ns()}
        self.wechat.emulator.notify_push(APPID, fields)
        push = self.builder.build(fields)
        answer = requests.post(f"{self.server.url}/wechat/{APPID}", params=push.query,
                               data=push.body, timeout=10)
        assert answer.status_code == 200, answer.text

    def received(self) -> list[str]:
        return [payload.get("text", {}).get("content", "")
                for _, openid, payload in self.wechat.emulator.sent(APPID)
                if openid == self.openid]


@pytest.fixture(scope="module")
def desktop(browser, server) -> Iterator[tuple[object, list[str]]]:
    """One operator at a desktop browser, logged in once (logins are rate-limited)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    log_in(page, server)
    yield page, dialogs
    context.close()


@pytest.fixture
def page(desktop, server) -> Iterator[object]:
    page, dialogs = desktop
    page.goto(f"{server.url}/console/conversations")
    yield page
    assert dialogs == [], f"a script ran: {dialogs}"


def log_in(page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/console/")
    assert page.url.endswith("/console/login")
    page.fill("#name", "ana")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/console/conversations")


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def bubble(page, text: str):
    return page.locator(".timeline .bubble", has_text=text)


def test_pushes_from_two_customers_appear_in_their_timelines(page, wechat, server):
    mei, lei = Customer(wechat, server, "o_mei_0001"), Customer(wechat, server, "o_lei_0002")
    mei.says("几点开门？")
    lei.says("我的订单还没到")
    # the open list updates by itself: no reload
    page.locator(".conversations a", has_text="o_mei_0001").wait_for()
    page.locator(".conversations a", has_text="o_lei_0002").wait_for()
    shot(page, "conversations")
    page.click("text=o_mei_0001")
    bubble(page, "几点开门？").wait_for()
    bubble(page, "我们 9:00-18:00 营业。").wait_for()
    assert "我的订单还没到" not in page.locator(".timeline").inner_text()
    mei.says("周日也开吗？")
    bubble(page, "周日也开吗？").wait_for()   # the open timeline updates within ~2 s
    page.go_back()
    page.click("text=o_lei_0002")
    bubble(page, "我的订单还没到").wait_for()
    bubble(page, "抱歉，我没听懂。").wait_for()


def test_a_hand_off_shows_under_needs_a_human(page, wechat, server):
    Customer(wechat, server, "o_handoff_03").says("转人工")
    page.click("nav >> text=Needs a human")
    item = page.locator(".conversations li", has_text="o_handoff_03")
    item.wait_for()
    assert "hand-off rule fired" in item.inner_text()
    shot(page, "needs-human")
    item.click()
    page.click("text=Mark handled")
    page.locator(".flagged").wait_for(state="detached")


def test_an_operators_answer_reaches_wechat_and_shows_as_sent(page, wechat, server):
    customer = Customer(wechat, server, "o_answer_04")
    customer.says("有人在吗？")
    page.locator(".conversations a", has_text="o_answer_04").click()
    bubble(page, "有人在吗？").wait_for()
    assert "messages left" in page.locator(".window").inner_text()
    page.fill("#reply-text", "您好，我是店员小安，请问需要什么帮助？")
    page.click("form.answer button[type=submit]")
    assert wait_for(lambda: "您好，我是店员小安，请问需要什么帮助？" in customer.received(),
                    timeout=10)
    sent = page.locator(".timeline li.out", has_text="您好，我是店员小安")
    sent.locator(".state-sent").wait_for()
    assert "answered by ana" in sent.inner_text()
    assert page.input_value("#reply-text") == ""
    shot(page, "conversation")


def png(width: int, height: int) -> bytes:
    """A PNG of noise: a photo-sized one does not compress below the server's body limit."""
    rows = b"".join(b"\0" + os.urandom(width * 3) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def test_a_photo_is_scaled_down_in_the_browser_and_reaches_wechat(page, wechat, server):
    customer = Customer(wechat, server, "o_photo_09")
    customer.says("能发张图片吗？")
    photo = png(900, 700)
    assert len(photo) > 1_000_000   # far over max_body (64 KiB)
    page.locator(".conversations a", has_text="o_photo_09").click()
    page.set_input_files("#reply-image", files=[{"name": "photo.png", "mimeType": "image/png",
                                                 "buffer": photo}])
    page.click("form.image button[type=submit]")
    page.locator(".result", has_text="queued as reply").wait_for()
    image = wait_for(lambda: [p for _, openid, p in wechat.emulator.sent(APPID)
                              if openid == "o_photo_09" and p["msgtype"] == "image"], timeout=10)
    uploaded = wechat.emulator.media[image[0]["image"]["media_id"]].data
    assert uploaded.startswith(b"\xff\xd8\xff") and len(uploaded) <= 65536   # a JPEG that fits
    page.locator(".timeline li.out", has_text="[image]").locator(".state-sent").wait_for()


def test_a_dead_reply_is_retried_from_the_page_and_becomes_sent(page, wechat, server):
    customer = Customer(wechat, server, "o_dead_05")
    wechat.emulator.fail_next(SEND, errcode=48001)
    customer.says("几点关门")
    page.click("nav >> text=Replies")
    row = page.locator(".replies li", has_text="o_dead_05")
    row.filter(has_text="errcode 48001").wait_for()   # shown sending first, then refused
    shot(page, "replies")
    row.locator("text=Retry").click()
    assert wait_for(lambda: "我们 9:00-18:00 营业。" in customer.received(), timeout=10)
    row.wait_for(state="detached")
    page.goto(f"{server.url}/console/conversations/{APPID}/o_dead_05")
    page.locator(".timeline li.out .state-sent").wait_for()


def test_a_customers_markup_renders_as_text(page, wechat, server):
    Customer(wechat, server, "o_xss_06").says(XSS)
    page.locator(".conversations a", has_text="o_xss_06").click()
    bubble(page, XSS).wait_for()
    assert page.locator(".timeline .bubble span.text").first.text_content() == XSS
    assert page.locator(".timeline img").count() == 0
    page.goto(f"{server.url}/console/rules")
    assert XSS in page.locator(".counts").nth(1).inner_text()   # the most frequent unmatched


def test_a_request_without_the_csrf_token_is_refused(page, wechat, server):
    customer = Customer(wechat, server, "o_csrf_07")
    customer.says("你好")
    wait_for(lambda: customer.received(), timeout=10)
    url = f"/console/conversations/{APPID}/o_csrf_07/reply"
    status, text = page.evaluate(
        """async (url) => {
             const resp = await fetch(url, {method: "POST", body: new URLSearchParams({text: "forged"}),
                                            headers: {"X-Requested-With": "console"}});
             return [resp.status, await resp.text()];
           }""", url)
    assert status == 403 and "CSRF" in text
    time.sleep(0.5)
    assert "forged" not in customer.received()


def test_a_phone_shows_the_list_and_a_timeline_without_sideways_scrolling(browser, wechat,
                                                                          server):
    customer = Customer(wechat, server, "o_phone_customer_with_a_long_openid_08")
    customer.says("我想问一下这个商品有没有货，" * 6)
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                  has_touch=True, device_scale_factor=2)
    page = context.new_page()
    page.set_default_timeout(10_000)
    try:
        log_in(page, server)
        page.locator(".conversations a", has_text="_openid_08").wait_for()
        width = "() => [document.documentElement.scrollWidth, window.innerWidth]"
        scroll, inner = page.evaluate(width)
        assert scroll <= inner, f"the list is {scroll}px wide on a {inner}px screen"
        shot(page, "phone-conversations")
        page.locator(".conversations a", has_text="_openid_08").click()
        bubble(page, "我想问一下").wait_for()
        scroll, inner = page.evaluate(width)
        assert scroll <= inner, f"the timeline is {scroll}px wide on a {inner}px screen"
        assert page.locator("#reply-text").is_visible()
        shot(page, "phone-conversation")
    finally:
        context.close()
