"""What a user checks in ``wxpush demo``'s output, step by step: run from the checkout
(tests/unit/cli) and from an installed wheel (tests/integration/test_wheel.py)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path


def assert_demo_steps(out: str, examples: Path) -> None:
    """Each step's visible result; ``examples``: the rules file and images the demo used."""
    rules = tomllib.loads((examples / "rules.example.toml").read_text(encoding="utf-8"))
    said = {rule["name"]: rule.get("reply", {}).get("text") for rule in rules["rule"]}
    builtins = rules["builtins"]
    assert f"\nrules    {examples / 'rules.example.toml'}, its cloud rules turned on" in out
    assert f"customer  (opens the chat)\nbusiness  {builtins['welcome']['text']}\n" in out
    assert f"customer  几点开门？\nbusiness  {said['hours']}\n" in out      # the example's text
    assert "customer  查订单 20261121\nbusiness  订单 20261121：已发货，预计 明天 送达。\n" in out
    assert "business  满 99 元包邮，不满收 8 元运费。\n" in out   # the emulator's faq collection
    menu = len((examples / "menu.png").read_bytes())   # WeChat holds the file the rule names
    assert ("customer  有菜单吗？\nbusiness  这是我们的价目表：\n"
            f"business  [image: 360×240 PNG, {menu} bytes]\n") in out
    assert "business  [link: 会员中心 · 积分、优惠券和专属客服 → https://example.com/vip]\n" in out
    card = len((examples / "card.png").read_bytes())
    assert ("customer  怎么下单？\nbusiness  [mini program card: 在小程序里下单 → "
            f"pages/index/index, cover 250×200 PNG, {card} bytes]\n") in out
    assert f"customer  你好\nbusiness  {builtins['fallback']['text']}\n" in out
    assert ("customer  转人工\nwxpush    (answers WeChat: transfer_customer_service, the chat "
            "goes to a human agent)\n\n") in out
    answers = re.findall(r"^wxpush    (\{.*\})", out, re.M)
    assert len(answers) == 3, out
    login, steps, phone = (json.loads(re.sub(r" \(.*\)$", "", a)) for a in answers)
    assert login["openid"] == "o_demo_customer" and login["expires_in"] == 604800
    assert re.fullmatch(r"\S{4}…", login["session"])        # never the whole credential
    assert [day["step"] for day in steps["stepInfoList"]] == [6230, 8012]
    assert steps["watermark"]["appid"] == phone["watermark"]["appid"] == "wxd0d0d0d0d0d0d0d0"
    assert phone["phoneNumber"] == "13800138000" and phone["countryCode"] == "86"
    assert "\nnext      wxpush serve --config " in out
    assert out.rstrip().endswith('README "Mini program login, open data and phone numbers"')
