"""How to test a Python handler: build a Router, feed it factory-made messages.

A handler is a plain function (message, ctx) -> Reply | list[Reply] | None. To serve it, put it
in a module of your own project beside wxpush.toml and name its router in [server] routers
(routers = ["orders:router"]).
"""

from __future__ import annotations

from webhook import Context, Router, TextMessage, TextReply, regex
from webhook.testing.factories import dispatch, make_text

router = Router(name="orders")


@router.text(regex(r"^退货\s*(?P<order>\d{6,})$"))
def start_return(message: TextMessage, ctx: Context) -> TextReply:
    return TextReply(f"订单 {ctx.match['order']} 的退货申请已提交。")


def test_return_request_is_answered():
    route, replies = dispatch(router, make_text("退货 ２０２４０１０１"))  # full-width digits too
    assert route.names == ("orders.start_return",)
    assert replies == [TextReply("订单 20240101 的退货申请已提交。")]


def test_other_text_is_not_ours():
    assert not router.route(make_text("退货"), appid="wx1")
