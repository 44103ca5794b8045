"""The cloud database's statements, written and read back (pure).

WeChat's database HTTP APIs (docs/protocol.md §9.2) take a statement in the cloud database's
JavaScript syntax, ``db.collection("faq").where({"key":"shipping"}).limit(1).get()``. Pasting
a customer's text into one would let it close the string and add calls of its own, so here
every value is written as a JSON literal (ASCII only: ``\\u2028`` and the like are escaped too)
and only names this module chose are written bare. ``parse`` reads exactly what this module
writes and refuses anything else, naming the column; the emulator runs statements through it.

    collection("faq").where({"key": "shipping"}).limit(1).get()
    collection("orders").where({"total": gt(100)}).order_by("total", "desc").count()
    collection("orders").doc(order_id).update({"status": "paid"})
    collection("orders").add({"item": "tea"})
"""

from webhook.cloudquery.build import (ACTIONS, MAX_LIMIT, Command, Query, Statement, collection,
                                      eq, gt, gte, in_, lt, lte, neq, nin)
from webhook.cloudquery.read import Operation, parse

__all__ = ["Command", "Query", "Statement", "Operation", "collection", "parse", "eq", "neq",
           "gt", "gte", "lt", "lte", "in_", "nin", "MAX_LIMIT", "ACTIONS"]
