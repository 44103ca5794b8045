"""Prometheus instruments: what every process of a server counts, named the Prometheus way.

Under ``wxpush serve`` each process (gunicorn's workers, the delivery process) writes its
counts into files of its own in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess
mode, chosen when the library is first imported), and whichever process answers
``GET /metrics`` adds them up (``webhook.server.exposition``). Without that variable (a bot's
tests, a bare ``create_app``) they count in memory, in ``REGISTRY``.

Every label has few values: an appid the config names (or ``unknown``), a MsgType folded into
``MSGTYPES``, a rule name from the rules, an errcode, a reason this code names. Nothing a
request says becomes a label as it is.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["REGISTRY", "PUSHES", "REJECTIONS", "ANSWER_SECONDS", "HANDLER_SECONDS",
           "DUPLICATES", "SENDS", "DEAD_LETTERS", "TOKEN_REFRESHES", "REPLIES_SENT", "msgtype",
           "app_label", "reason", "MSGTYPES", "UNKNOWN"]

REGISTRY = CollectorRegistry(auto_describe=True)
UNKNOWN = "unknown"
MSGTYPES = frozenset({"text", "image", "miniprogrampage", "event"})

# WeChat waits 5 s for an answer: the buckets are fine below it and mark the budget itself.
_ANSWER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0,
                   5.0, 10.0)
_HANDLER_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

PUSHES = Counter("wxpush_pushes", "Push deliveries on /wechat/{appid}: accepted (recorded), "
                 "duplicate (a retry of a recorded push, answered as before) or rejected",
                 ["app", "msgtype", "outcome"], registry=REGISTRY)
REJECTIONS = Counter("wxpush_rejections", "Requests refused with a 4xx, by reason (the "
                     "error: bad_signature, decrypt_error, payload_too_large, "
                     "request_timeout, ...)",
                     ["reason"], registry=REGISTRY)
ANSWER_SECONDS = Histogram("wxpush_answer_seconds", "Time from a push read whole to its "
                           "answer (WeChat gives up at 5 s)", ["app"],
                           buckets=_ANSWER_BUCKETS, registry=REGISTRY)
HANDLER_SECONDS = Histogram("wxpush_handler_seconds", "Time a rule's handler ran",
                            ["rule"], buckets=_HANDLER_BUCKETS, registry=REGISTRY)
DUPLICATES = Counter("wxpush_duplicates_dropped", "Retries of a recorded push that were not "
                     "handled again", ["app"], registry=REGISTRY)
SENDS = Counter("wxpush_sends", "Calls to WeChat's customer-service send, by errcode (0: sent)",
                ["app", "errcode"], registry=REGISTRY)
DEAD_LETTERS = Counter("wxpush_dead_letters", "Replies set aside for good, by reason: an "
                       "errcode, window (the customer's send window was closed or used up) or "
                       "attempts (retried send_attempts times)", ["app", "reason"],
                       registry=REGISTRY)
TOKEN_REFRESHES = Counter("wxpush_token_refreshes", "access_token fetches, by reason "
                          "(missing, expiring, refused, manual) and outcome (ok, failed)",
                          ["app", "reason", "outcome"], registry=REGISTRY)
REPLIES_SENT = Counter("wxpush_replies_sent", "Replies WeChat accepted (rate() gives "
                       "replies a second)", ["app"], registry=REGISTRY)


def reason(name: str) -> str:
    """A class name as a label: ``BadSignature`` -> ``bad_signature``."""
    return "".join(f"_{ch.lower()}" if ch.isupper() and i else ch.lower()
                   for i, ch in enumerate(name))


def msgtype(value: str | None) -> str:
    """A MsgType as a label: one of ``MSGTYPES``, else ``other``."""
    return value if value in MSGTYPES else "other"


def app_label(appid: str, known: object) -> str:
    """An appid as a label if the config names it (``appid in known``), else ``unknown``."""
    return appid if appid in known else UNKNOWN
