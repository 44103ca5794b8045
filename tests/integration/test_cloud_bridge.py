"""The cloud bridge through ``wxpush serve`` (gunicorn and the delivery process) with the
emulator holding a cloud environment: rule actions and Python handlers answering from it,
mini program B calling A's functions, permanent file links (also behind nginx), and the
token service."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from webhook.testing import PushBuilder
from webhook.testing.emulator.cloud import DEMO_COLLECTIONS, DEMO_FUNCTIONS

from harness import AES_KEY, APPID, ROOT, TOKEN, ServerProcess, wait_for

pytestmark = pytest.mark.slow
HERE = Path(__file__).parent
ENV = "shop-4gxyz"
B, B_SECRET = "wxb0b0b0b0b0b0b0b0", "secret-b"
BUCKET = f"{ENV}.7368-{ENV}"
PUBLIC = f"cloud://{BUCKET}/public/"
GH = "gh_0123456789ab"
RULES = """
[[rule]]
name = "order-status"
regex = '^订单\\s*(?P<order>\\d{6,})$'
function = { name = "orderStatus", data = { order = "{order}", openid = "{openid}" } }
reply.text = "订单 {order}：{result.status}，预计 {result.eta} 送达。"
reply.on_error = "暂时查不到订单 {order}，请稍后再试。"

[[rule]]
name = "faq-from-db"
keywords = ["运费"]
query = { collection = "faq", where = { key = "shipping" }, limit = 1 }
reply.text = "{result[0].answer}"
"""
APPS = f"""cloud_env = "{ENV}"
files = ["{PUBLIC}"]

[[apps]]
appid = "{B}"
secret = "{B_SECRET}"
token = "{TOKEN}"
encoding_aes_key = "{AES_KEY}"

[[apps.bridge]]
app = "{APPID}"
functions = ["whoami", "orderStatus", "slow", "boom"]
"""


def whoami(event: dict) -> dict:
    return {"you": event.get("openid"), "from": event.get("appid"), "asked": event.get("q")}


@pytest.fixture
def cloud(emulator):
    emu = emulator.emulator
    emu.register_app(B, B_SECRET)
    emu.add_cloud_env(APPID, ENV, functions={
        **DEMO_FUNCTIONS, "whoami": whoami, "slow": lambda event: time.sleep(2),
        "boom": lambda event: {}["missing"]}, collections=DEMO_COLLECTIONS)
    return emulator


def start(servers, cloud, tmp_path, store: str | None = None, **kwargs) -> ServerProcess:
    server = ServerProcess(tmp_path / f"server{len(servers)}", api_base=cloud.url,
                           store=store or f"sqlite:///{tmp_path}/wxpush.db", apps=APPS, **kwargs)
    servers.append(server)
    return server.start()


def push(cloud, server: ServerProcess, fields: dict, *, times: int = 1) -> None:
    fields = {"ToUserName": GH, "CreateTime": int(time.time()), **fields}
    cloud.emulator.notify_push(APPID, fields)
    built = PushBuilder(appid=APPID, token=TOKEN, encoding_aes_key=AES_KEY).build(fields)
    for _ in range(times):   # WeChat delivers a push again when unsure it arrived
        answer = requests.post(f"{server.url}/wechat/{APPID}", params=built.query,
                               data=built.body, timeout=5)
        assert (answer.status_code, answer.text) == (200, "success")


def texts(cloud, openid: str) -> list[str]:
    return [payload["text"]["content"] for _, to, payload in cloud.emulator.sent(APPID)
            if to == openid]


def test_rules_answer_from_the_cloud_once(servers, cloud, tmp_path, store_url):
    server = start(servers, cloud, tmp_path, store=store_url, rules=RULES)
    push(cloud, server, {"FromUserName": "o-a", "MsgType": "text", "Content": "订单 123457",
                         "MsgId": 101}, times=3)
    push(cloud, server, {"FromUserName": "o-b", "MsgType": "text", "Content": "订单 123450",
                         "MsgId": 102})
    push(cloud, server, {"FromUserName": "o-c", "MsgType": "text", "Content": "运费怎么算",
                         "MsgId": 103})
    assert wait_for(lambda: len(cloud.emulator.sent(APPID)) >= 3, timeout=30)
    time.sleep(1.0)   # a second send would come now
    assert texts(cloud, "o-a") == ["订单 123457：已发货，预计 明天 送达。"]
    assert texts(cloud, "o-b") == ["暂时查不到订单 123450，请稍后再试。"]
    assert texts(cloud, "o-c") == ["满 99 元包邮，不满收 8 元运费。"]
    assert len(cloud.emulator.calls("/tcb/invokecloudfunction")) == 2
    assert "rule action failed rule=order-status" in server.logs()


def test_python_handlers_use_ctx_wechat(servers, cloud, tmp_path):
    server = start(servers, cloud, tmp_path, server='routers = ["cloudbot:router"]',
                   env={"PYTHONPATH": str(HERE)})
    cloud.emulator.notify_push(APPID, {"FromUserName": "o-staff", "MsgType": "text"})
    media_id = cloud.emulator.customer_image(APPID, b"\xff\xd8" + b"j" * 1022)
    push(cloud, server, {"FromUserName": "o-img", "MsgType": "image", "MediaId": media_id,
                         "PicUrl": "https://mmbiz.qpic.cn/x", "MsgId": 201})
    push(cloud, server, {"FromUserName": "o-x", "MsgType": "text", "Content": "员工在吗",
                         "MsgId": 202})
    push(cloud, server, {"FromUserName": "o-y", "MsgType": "text", "Content": "查 123457",
                         "MsgId": 203})
    assert wait_for(lambda: len(cloud.emulator.sent(APPID)) >= 5, timeout=30)
    assert texts(cloud, "o-img") == ["图片 1024 字节"]
    assert texts(cloud, "o-x") == ["已通知客服", "请稍候"]
    assert texts(cloud, "o-staff") == ["顾客留言：员工在吗"]
    assert texts(cloud, "o-y") == ["123457 已发货"]
    typing = cloud.emulator.calls("/cgi-bin/message/custom/business/typing")
    assert [(c.body["touser"], c.errcode) for c in typing] == [("o-y", 0)]


def login(cloud, server: ServerProcess, openid: str) -> str:
    answer = requests.post(f"{server.url}/apps/{B}/login", timeout=5, json={
        "code": cloud.emulator.login_code(B, openid)})
    assert answer.status_code == 200, answer.text
    return answer.json()["session"]


def test_mini_program_b_calls_a_function_of_a_with_its_verified_openid(servers, cloud,
                                                                      tmp_path):
    cloud.emulator.function_limit = 1.0
    server = start(servers, cloud, tmp_path)
    session = login(cloud, server, "o-bob")
    url = f"{server.url}/apps/{B}/functions"
    bearer = {"Authorization": f"Bearer {session}"}
    answer = requests.post(f"{url}/whoami", headers=bearer, timeout=10,
                           json={"q": "hi", "openid": "o-forged", "appid": APPID})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"errcode": 0, "errmsg": "ok",
                             "data": {"you": "o-bob", "from": B, "asked": "hi"}}
    (call,) = cloud.emulator.calls("/tcb/invokecloudfunction")
    assert (call.appid, call.params["env"]) == (APPID, ENV)
    refusals = [
        (requests.post(f"{url}/users_add", headers=bearer, json={}, timeout=5), 403),
        (requests.post(f"{url}/whoami", json={}, timeout=5), 401),
        (requests.post(f"{url}/whoami", headers={"Authorization": "Bearer x"}, json={},
                       timeout=5), 401),
        (requests.post(f"{url}/whoami", headers={**bearer, "Content-Type": "application/json"},
                       data=b"{nope", timeout=5), 400),
    ]
    for answer, status in refusals:
        assert answer.status_code == status, answer.text
        assert answer.json()["errmsg"] and "Traceback" not in answer.text
    too_big = requests.post(f"{url}/whoami", headers=bearer, json={"q": "x" * 70000}, timeout=5)
    assert (too_big.status_code, too_big.text) == (413, "body over 65536 bytes")
    assert len(cloud.emulator.calls("/tcb/invokecloudfunction")) == 1
    slow = requests.post(f"{url}/slow", headers=bearer, json={}, timeout=15)
    assert slow.status_code == 504 and "timed out" in slow.json()["errmsg"]
    boom = requests.post(f"{url}/boom", headers=bearer, json={}, timeout=15)
    assert boom.status_code == 502 and "KeyError" in boom.json()["errmsg"]
    assert session not in server.logs() and B_SECRET not in server.logs()


def test_a_permanent_file_link_redirects_to_a_working_download(servers, cloud, tmp_path,
                                                                nginx):
    server = start(servers, cloud, tmp_path)
    cloud.emulator.put_file(ENV, "public/菜单.png", b"\x89PNG menu")
    cloud.emulator.put_file(ENV, "private/账本.txt", b"secret")
    proxy = nginx(server.port)
    for base in (server.url, f"http://127.0.0.1:{proxy.port}"):
        link = f"{base}/files/{APPID}/{BUCKET}/public/菜单.png"
        answer = requests.get(link, timeout=5)   # follows the redirect, as a browser does
        assert answer.status_code == 200 and answer.content == b"\x89PNG menu"
        assert answer.history[0].status_code == 302
        private = requests.get(f"{base}/files/{APPID}/{BUCKET}/private/账本.txt",
                               timeout=5, allow_redirects=False)
        assert private.status_code == 403 and private.text.startswith("file not served")
    assert len(cloud.emulator.calls("/tcb/batchdownloadfile")) == 1   # then from the store


def test_a_token_service_client_gets_the_token_the_server_uses(servers, cloud, tmp_path):
    server = ServerProcess(tmp_path / "server", api_base=cloud.url, apps=APPS,
                           store=f"sqlite:///{tmp_path}/wxpush.db", rules=RULES)
    servers.append(server)
    added = subprocess.run([sys.executable, "-m", "webhook.cli", "clients", "add", "erp",
                            "--apps", APPID, "--config", str(server.config)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr
    key = added.stdout.splitlines()[2]
    server.start()
    push(cloud, server, {"FromUserName": "o-t", "MsgType": "text", "Content": "运费",
                         "MsgId": 301})
    assert wait_for(lambda: cloud.emulator.sent(APPID), timeout=30)   # the server has a token
    shown = subprocess.run([sys.executable, "-m", "webhook.cli", "token", "show", APPID,
                            "--reveal", "--config", str(server.config)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    used = shown.stdout.split("token       ")[1].strip()
    bearer = {"Authorization": f"Bearer {key}"}
    answer = requests.get(f"{server.url}/apps/{APPID}/access_token", headers=bearer, timeout=5)
    assert answer.status_code == 200 and answer.json()["access_token"] == used
    assert 7000 < answer.json()["expires_in"] <= 7200
    assert requests.get(f"{server.url}/apps/{B}/access_token", headers=bearer,
                        timeout=5).status_code == 403
    assert requests.get(f"{server.url}/apps/{APPID}/access_token", timeout=5,
                        headers={"Authorization": "Bearer wrong"}).status_code == 401
    replaced = requests.post(f"{server.url}/apps/{APPID}/access_token/invalid", headers=bearer,
                             json={"access_token": used}, timeout=10)
    assert replaced.status_code == 200 and replaced.json()["access_token"] != used
    assert json.loads(requests.get(f"{server.url}/apps/{APPID}/access_token", headers=bearer,
                                   timeout=5).text)["access_token"] == replaced.json()["access_token"]
    assert key not in server.logs() and used not in server.logs()


def test_wxpush_cloud_uses_the_servers_token(servers, cloud, tmp_path):
    server = start(servers, cloud, tmp_path, rules=RULES)
    push(cloud, server, {"FromUserName": "o-t", "MsgType": "text", "Content": "运费",
                         "MsgId": 401})
    assert wait_for(lambda: cloud.emulator.sent(APPID), timeout=30)
    issued = cloud.emulator.token_fetches(APPID)["stable_issued"]
    called = subprocess.run([sys.executable, "-m", "webhook.cli", "cloud", "call", APPID,
                             "orderStatus", "--data", '{"order": "123457"}', "--config",
                             str(server.config)], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout)["status"] == "已发货"
    assert cloud.emulator.token_fetches(APPID)["stable_issued"] == issued == 1
