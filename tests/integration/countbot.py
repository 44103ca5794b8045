"""A Python router for the delivery tests: notes every handler start and end in a file
(``COUNTBOT_LOG``) and echoes the text; ``slow N`` sleeps N seconds first, ``crash`` ends
its process on the spot."""

import os
import time

from webhook import TEXT, Router, TextReply

router = Router(name="countbot")


def _note(what: str, msg_id: object) -> None:
    with open(os.environ["COUNTBOT_LOG"], "a", encoding="utf-8") as log:
        log.write(f"{what} {os.getpid()} {msg_id}\n")


@router.message(TEXT, name="count")
def count(message, ctx):
    _note("start", message.msg_id)
    words = message.content.split()
    if words[0] == "slow":
        time.sleep(float(words[1]))
    if words[0] == "crash":
        os._exit(70)   # (3 would tell gunicorn its worker cannot boot)
    _note("end", message.msg_id)
    return TextReply(f"echo {message.content}")
