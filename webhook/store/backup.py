"""A consistent copy of a SQLite store while its server runs: the database through SQLite's
online backup API, then the pushes its journals hold that the database does not have yet.

The database is copied in one step, under one read transaction, so it is one moment of it
whatever the server writes meanwhile. The journals are copied after it, each up to its last
whole line: every line the copied database had not taken in is still in them (a journal file
is deleted only once its writer is gone and it was read to the end), and a restored server
takes in what lies past the read positions the copied database recorded, as after a crash.
"""

from __future__ import annotations

import os
import sqlite3

from webhook.errors import StoreError
from webhook.store.files import private_directory, private_file
from webhook.store.journal import SUFFIX

__all__ = ["backup"]


def backup(path: str, dest: str) -> tuple[str, int]:
    """Copy the store at ``path`` into the directory ``dest`` (made, 0700; it must not hold
    files already): (the database's copy, how many journal files were copied)."""
    if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        raise StoreError(f"backup: {dest} exists and is not an empty directory")
    if not os.path.isfile(path):
        raise StoreError(f"backup: no sqlite store at {path}")
    os.makedirs(dest, mode=0o700, exist_ok=True)
    os.chmod(dest, 0o700)
    name = os.path.basename(path)
    copy = os.path.join(dest, name)
    os.close(private_file(copy))
    try:
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        target = sqlite3.connect(copy)
        try:
            source.backup(target)   # all pages in one step: one consistent moment
        finally:
            source.close()
            target.close()
    except sqlite3.Error as exc:
        raise StoreError(f"backup of {path}: {exc}") from exc
    return copy, _journals(f"{path}-inbox", os.path.join(dest, f"{name}-inbox"))


def _journals(directory: str, dest: str) -> int:
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(SUFFIX))
    except FileNotFoundError:
        return 0
    private_directory(dest)
    copied = 0
    for name in names:
        try:
            with open(os.path.join(directory, name), "rb") as file:
                data = file.read()
        except FileNotFoundError:   # read to its end and deleted meanwhile
            continue
        written = data.find(b"\0")
        data = data if written < 0 else data[:written]
        fd = private_file(os.path.join(dest, name))
        with os.fdopen(fd, "wb") as out:
            out.write(data[:data.rfind(b"\n") + 1])
        copied += 1
    return copied
