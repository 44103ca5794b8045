"""A Python router for the cloud tests: it uses its app's WeChat API through ctx.wechat.
An image is downloaded by its MediaId and its size answered; "员工" also tells the staff
member (openid ``o-staff``) with a send of its own; "查 N" shows typing, then asks the
orderStatus cloud function."""

from webhook import IMAGE, TEXT, Router, TextReply, prefix

router = Router(name="cloudbot")


@router.message(IMAGE, name="photo")
def photo(message, ctx):
    return TextReply(f"图片 {len(ctx.wechat.download_media(message.media_id))} 字节")


@router.message(TEXT & prefix("员工"), name="staff")
def staff(message, ctx):
    ctx.wechat.send(TextReply("已通知客服"))
    ctx.wechat.send(TextReply(f"顾客留言：{message.content}"), openid="o-staff")
    return TextReply("请稍候")


@router.message(TEXT & prefix("查 "), name="lookup")
def lookup(message, ctx):
    ctx.wechat.typing()
    order = ctx.wechat.call_function("orderStatus", {"order": message.content[2:]})
    return TextReply(f"{order['order']} {order['status']}")
