"""Every console endpoint through falcon.testing, on a real SQLite store with the delivery
threads running and the emulator as WeChat: off unless configured, login and its limits,
sessions, CSRF, escaping, the operator's apps, and each action's effect."""

from __future__ import annotations

import json
import logging
import re

import falcon.testing

from webhook.config.settings import Operator
from webhook.delivery.history import HANDOFF
from webhook.store import NewReply
from webhook.testing.emulator.state import MediaItem

from conftest import APPID, Console, build_console

XSS = "<img src=x onerror=alert(1)>"


def test_the_console_is_off_without_operators(tmp_path, clock):
    for console in build_console(tmp_path, clock, operators=()):
        for path in ("/console/", "/console/login", "/console/conversations",
                     "/console/static/console.js"):
            assert console.client.simulate_get(path).status_code == 404


def test_pages_need_a_login(console: Console):
    for path in ("/console/", "/console/conversations", "/console/needs-human",
                 f"/console/conversations/{APPID}/oA", "/console/replies", "/console/rules",
                 "/console/health", f"/console/media/{APPID}/abc"):
        answer = console.client.simulate_get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"].endswith(("/console/login", "/console/conversations"))
    refused = console.post(f"/console/conversations/{APPID}/oA/reply", {"text": "hi"}, csrf="x")
    assert refused.status_code == 403 and "not logged in" in refused.text


def test_login_sets_a_strict_cookie_and_logout_ends_the_session(console: Console, caplog):
    caplog.set_level(logging.INFO, logger="webhook.console")
    assert console.login(password="wrong password").status_code == 401
    assert console.login(name="nobody").status_code == 401
    answer = console.login(headers={"Host": "127.0.0.1:8000"})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/conversations"
    cookie = answer.cookies["wxpush_console"]
    assert cookie.http_only and cookie.same_site == "Strict" and cookie.path == "/console"
    assert not cookie.secure                  # a browser on loopback, plain HTTP
    assert cookie.max_age == 12 * 3600
    assert "console login failed operator=nobody" in caplog.text
    assert "console login operator=ana" in caplog.text
    assert "correct horse" not in caplog.text
    page = console.client.simulate_get("/console/conversations")
    assert page.status_code == 200 and "Log out ana" in page.text
    csrf = console.csrf()
    assert console.post("/console/logout", {}, csrf=csrf).status_code == 303
    assert console.client.simulate_get("/console/conversations").status_code == 303


def test_the_cookie_is_secure_off_loopback(console: Console):
    answer = console.login(headers={"Host": "shop.example.com"})
    assert answer.cookies["wxpush_console"].secure


def test_a_login_without_the_forms_token_is_refused(console: Console):
    answer = console.client.simulate_post(
        "/console/login", body="name=ana&password=correct+horse+battery",
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 403 and "wxpush_console" not in answer.cookies


def test_login_attempts_are_rate_limited_per_client(console: Console):
    statuses = [console.login(password="wrong password").status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    limited = console.login()   # even the right password waits
    assert limited.status_code == 429 and "try again in" in limited.text
    assert int(limited.headers["retry-after"]) > 0
    other = console.login(headers={"X-Forwarded-For": "203.0.113.9"})
    assert other.status_code == 303


def test_every_page_carries_a_strict_content_security_policy(console: Console):
    console.login()
    for path in ("/console/conversations", "/console/rules", "/console/health",
                 "/console/replies", "/console/needs-human"):
        answer = console.client.simulate_get(path)
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy, path
        assert "unsafe-inline" not in policy and answer.headers["cache-control"] == "no-store"
        assert "<script>" not in answer.text and "style=" not in answer.text
        assert "http://" not in answer.text and "https://" not in answer.text
    script = console.client.simulate_get("/console/static/console.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith(
        "text/javascript")
    assert console.client.simulate_get("/console/static/x.js").status_code == 404


def test_customer_text_is_escaped_everywhere(console: Console):
    console.login()
    console.push("oX", XSS, 1)
    console.wait(lambda: console.store.history_conversations())
    pages = [console.client.simulate_get(p).text for p in (
        "/console/conversations", f"/console/conversations/{APPID}/oX",
        f"/console/conversations/{APPID}/oX?part=timeline", "/console/needs-human",
        "/console/rules")]
    for text in pages:
        assert XSS not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[1]
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[4]   # the most frequent unmatched


def test_conversations_update_and_an_answer_goes_through_the_outbox(console: Console,
                                                                      caplog):
    caplog.set_level(logging.INFO, logger="webhook.console")
    console.login()
    console.push("oA", "几点开门", 1)
    console.replied(1)
    console.clock.advance(1)
    console.push("oB", "你好", 2)
    console.replied(2)
    listing = console.client.simulate_get("/console/conversations?part=list").text
    assert listing.index(">oB<") < listing.index(">oA<")   # the latest first
    part = console.client.simulate_get(f"/console/conversations/{APPID}/oA?part=timeline")
    assert "几点开门" in part.text and "9:00-18:00" in part.text and "state-sent" in part.text
    window = console.client.simulate_get(f"/console/conversations/{APPID}/oA?part=window")
    assert "4 messages left, 47 h 59 min left" in window.text
    csrf = console.csrf()
    answer = console.post(f"/console/conversations/{APPID}/oA/reply",
                          {"text": "您好，我是店员小安"}, csrf=csrf)
    assert answer.status_code == 200 and answer.text.startswith("queued as reply #")
    console.replied(3)
    assert console.emulator.sent(APPID)[-1] == (
        APPID, "oA", {"msgtype": "text", "text": {"content": "您好，我是店员小安"}})
    timeline = console.wait(lambda: (t := console.client.simulate_get(
        f"/console/conversations/{APPID}/oA?part=timeline").text).count("state-sent") == 2 and t)
    assert "answered by ana" in timeline
    assert re.search(r"console reply operator=ana appid=\S+ user=[0-9a-f]{12} id=\d+ type=text",
                     caplog.text)
    plain = console.post(f"/console/conversations/{APPID}/oA/reply", {"text": "again"},
                         csrf=csrf, headers={"X-Requested-With": ""})
    assert plain.status_code == 303   # a browser without the script goes back to the page


def test_an_answer_without_the_csrf_token_is_refused_and_changes_nothing(console: Console):
    console.login()
    console.push("oA", "几点", 1)
    console.replied(1)
    before = console.store.outbox_stats()
    for csrf in (None, "", "forged-token"):
        answer = console.post(f"/console/conversations/{APPID}/oA/reply", {"text": "x"},
                              csrf=csrf)
        assert answer.status_code == 403 and "CSRF" in answer.text
    assert console.store.outbox_stats() == before


def test_an_answer_wechat_would_refuse_is_refused_with_the_reason(console: Console, clock):
    console.login()
    console.push("oA", "几点", 1)
    console.replied(1)
    clock.advance(48.5 * 3600)
    console.login()   # the session expired meanwhile
    answer = console.post(f"/console/conversations/{APPID}/oA/reply", {"text": "还在吗"},
                          csrf=console.csrf())
    assert answer.status_code == 409
    assert answer.text == "not sent: no open window for this user (WeChat would answer 45015)"
    for text in ("", " ", "x" * 2001):
        assert console.post(f"/console/conversations/{APPID}/oA/reply", {"text": text},
                            csrf=console.csrf()).status_code == 400


def test_a_hand_off_needs_a_human_until_marked_handled(console: Console):
    console.login()
    console.push("oH", "转人工", 1)
    console.wait(lambda: console.store.history_conversations(flagged=True))
    page = console.client.simulate_get("/console/needs-human?part=list").text
    assert HANDOFF in page and ">oH<" in page
    assert '<span class="count">1</span>' in console.client.simulate_get("/console/rules").text
    assert console.post(f"/console/conversations/{APPID}/oH/handled", {},
                        csrf=console.csrf()).status_code == 200
    assert "Nothing needs a human" in console.client.simulate_get(
        "/console/needs-human?part=list").text


def test_a_dead_reply_is_retried_from_the_replies_page(console: Console):
    console.login()
    console.emulator.fail_next("/cgi-bin/message/custom/send", errcode=48001)
    console.push("oD", "几点", 1)
    console.wait(lambda: console.store.outbox_stats()["dead"] == 1)
    (dead,) = console.store.outbox_list(state="dead")
    page = console.client.simulate_get("/console/replies?part=list").text
    assert "errcode 48001" in page and f'name="id" value="{dead.id}"' in page
    answer = console.post("/console/replies/retry", {"id": dead.id}, csrf=console.csrf())
    assert answer.status_code == 200 and answer.text == "1 replies queued again"
    console.wait(lambda: console.store.outbox_get(dead.id).state == "sent")
    timeline = console.wait(lambda: (t := console.client.simulate_get(
        f"/console/conversations/{APPID}/oD?part=timeline").text).count("state-sent") and t)
    assert "errcode 48001" not in timeline
    assert console.post("/console/replies/retry", {"id": "999"},
                        csrf=console.csrf()).status_code == 404


def test_purge_needs_an_operator_of_every_app(console: Console, clock):
    console.login()
    console.push("oP", "几点", 1)
    console.wait(lambda: console.store.outbox_stats()["sent"] == 1)
    clock.advance(8 * 86400)
    console.login()
    answer = console.post("/console/replies/purge", {"days": "7"}, csrf=console.csrf())
    assert answer.status_code == 200 and answer.text == "1 sent and dead replies purged"
    assert console.post("/console/replies/purge", {"days": "-1"},
                        csrf=console.csrf()).status_code == 400
    console.login(name="bo")
    refused = console.post("/console/replies/purge", {"days": "0"}, csrf=console.csrf())
    assert refused.status_code == 403


def test_an_operator_of_some_apps_sees_only_those(console: Console):
    console.push("oA", "几点", 1)
    console.wait(lambda: console.store.history_conversations())
    console.store.outbox_add([NewReply(APPID, "oA", json.dumps(
        {"msgtype": "text", "text": {"content": "secret-reply"}}))])
    console.login(name="bo")
    assert ">oA<" not in console.client.simulate_get("/console/conversations").text
    assert "secret-reply" not in console.client.simulate_get("/console/replies").text
    for path in (f"/console/conversations/{APPID}/oA", f"/console/media/{APPID}/m1"):
        assert console.client.simulate_get(path).status_code == 404
    refused = console.post(f"/console/conversations/{APPID}/oA/reply", {"text": "x"},
                           csrf=console.csrf())
    assert refused.status_code == 404
    assert APPID not in console.client.simulate_get("/console/rules").text


def test_an_image_answer_is_uploaded_and_queued(console: Console):
    console.login()
    console.push("oI", "几点", 1)
    console.replied(1)
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
    url = f"/console/conversations/{APPID}/oI/image"
    headers = {"X-CSRF-Token": console.csrf(), "X-Requested-With": "console"}
    answer = console.client.simulate_post(url, body=png,
                                          headers={**headers, "Content-Type": "image/png"})
    assert answer.status_code == 200, answer.text
    sent = console.replied(2)[-1]
    media_id = sent[2]["image"]["media_id"]
    assert console.emulator.media[media_id].data == png
    assert console.client.simulate_post(url, body=b"GIF89a", headers={
        **headers, "Content-Type": "image/gif"}).status_code == 415
    assert console.client.simulate_post(url, body=b"not a png", headers={
        **headers, "Content-Type": "image/png"}).status_code == 400
    assert console.client.simulate_post(url, body=png + b"\0" * 70_000, headers={
        **headers, "Content-Type": "image/png"}).status_code == 413
    assert console.client.simulate_post(url, body=png, headers={
        "Content-Type": "image/png"}).status_code == 403


def test_a_customers_image_is_fetched_from_wechat(console: Console):
    console.login()
    jpeg = b"\xff\xd8\xff\xe0" + b"\1" * 32
    media_id = "M" * 20
    console.emulator.media[media_id] = MediaItem(appid=APPID, data=jpeg, content_type="image/jpeg",
                                                 filename="a.jpg", created_at=console.clock())
    answer = console.client.simulate_get(f"/console/media/{APPID}/{media_id}")
    assert answer.status_code == 200 and answer.content == jpeg
    assert answer.headers["content-type"] == "image/jpeg"
    assert "sandbox" in answer.headers["content-security-policy"]
    gone = console.client.simulate_get(f"/console/media/{APPID}/unknown")
    assert gone.status_code == 404 and "3 days" in gone.text
    assert console.client.simulate_get(f"/console/media/{APPID}/a%2Fb").status_code == 404


def test_typing_is_shown_only_while_wechat_allows_it(console: Console, clock):
    console.login()
    console.push("oT", "几点", 1)
    console.replied(1)
    url = f"/console/conversations/{APPID}/oT/typing"
    assert console.post(url, {}, csrf=console.csrf()).status_code == 200
    clock.advance(60)
    refused = console.post(url, {}, csrf=console.csrf())
    assert refused.status_code == 409 and "errcode 45080" in refused.text


def test_rules_show_the_reload_status_and_try_a_message(console: Console):
    console.login()
    page = console.client.simulate_get("/console/rules", params={"text": "几点开门"}).text
    assert "Matched: <b>hours</b>" in page and "<li>9:00-18:00</li>" in page
    assert "Answer to WeChat: success" in page
    human = console.client.simulate_get("/console/rules", params={"text": "转人工"}).text
    assert "transfer_customer_service" in human
    console.rules.write_text("[[rule]]\nname = 'x'\nbogus = 1\n", encoding="utf-8")
    console.app.live.check()
    refused = console.client.simulate_get("/console/rules").text
    assert "The last edit was refused" in refused and ":3: bogus: unknown key" in refused
    assert "the last edit was refused" in console.client.simulate_get("/console/health").text


def test_health_reads_the_stores_own_figures(console: Console):
    console.login()
    console.emulator.fail_next("/cgi-bin/message/custom/send", errcode=48001)
    console.push("oD", "几点", 1)
    console.wait(lambda: console.store.outbox_stats()["dead"] == 1)
    page = console.client.simulate_get("/console/health").text
    assert "<b>OK</b> store: store answers" in page
    assert "0 pushes and 1 replies set aside" in page                  # /readyz's own checks
    dead = re.search(r"<dt>replies set aside for good</dt><dd>(\d+)</dd>", page)  # the metrics
    assert dead and int(dead.group(1)) >= 1   # (this process's counts: earlier tests' too)
    assert "0 pending, 0 sending, 0 sent, 1 dead" in page and "kept 7 days" in page


def test_with_history_off_the_console_shows_live_state_only(tmp_path, clock):
    for console in build_console(tmp_path, clock, history_days=0):
        console.login()
        console.push("oA", "你好", 1)
        console.replied(1)
        assert "History is off" in console.client.simulate_get("/console/conversations").text
        assert console.store.history_conversations() == []
        page = console.client.simulate_get(f"/console/conversations/{APPID}/oA")
        assert page.status_code == 200 and "Answer as a person" in page.text


def test_a_removed_operators_session_ends(tmp_path, clock):
    first = build_console(tmp_path, clock)
    console = next(first)
    console.login(name="bo")
    assert console.client.simulate_get("/console/conversations").status_code == 200
    second = build_console(tmp_path, clock, operators=(Operator("ana", "scrypt$..."),))
    alone = next(second)
    stale = falcon.testing.TestClient(alone.app, headers={"Cookie": console.cookie})
    assert stale.simulate_get("/console/conversations").status_code == 303
    second.close()
    first.close()


def test_retry_all_dead_requeues_only_the_operators_apps(console: Console):
    console.emulator.fail_next("/cgi-bin/message/custom/send", errcode=48001, times=2)
    console.push("oR1", "几点", 1)
    console.push("oR2", "几点", 2)
    console.wait(lambda: console.store.outbox_stats()["dead"] == 2)
    console.login(name="bo")   # sees OTHER only: nothing of APPID is retried
    answer = console.post("/console/replies/retry", {"all": "1"}, csrf=console.csrf())
    assert answer.text == "0 replies queued again" and console.store.outbox_stats()["dead"] == 2
    console.login()
    answer = console.post("/console/replies/retry", {"all": "1"}, csrf=console.csrf())
    assert answer.text == "2 replies queued again"
    console.wait(lambda: console.store.outbox_stats()["sent"] == 2)
