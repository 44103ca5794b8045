"""The SQLite store's files are its owner's alone: they hold the access_token, decrypted
customer messages and replies. Files are 0600 and directories 0700 whatever the umask, and
one found wider when the store opens is narrowed, with one log line."""

from __future__ import annotations

import logging
import os
import stat

__all__ = ["private_file", "private_directory", "narrow"]

log = logging.getLogger(__name__)
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


def private_file(path: str) -> int:
    """Open ``path`` read-write, creating it 0600 if missing; the descriptor."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return os.open(path, os.O_RDWR)
    os.fchmod(fd, FILE_MODE)   # a umask that takes the owner's own bits away is undone
    return fd


def private_directory(path: str) -> None:
    """Make the directory ``path`` 0700 if missing."""
    try:
        os.mkdir(path, DIRECTORY_MODE)
    except FileExistsError:
        return
    os.chmod(path, DIRECTORY_MODE)   # as for files


def narrow(paths: list[str]) -> list[str]:
    """Take group and other access away from each of ``paths`` that has any (files to 0600,
    directories to 0700; missing ones are skipped); those changed, named in one log line."""
    changed = []
    for path in paths:
        try:
            found = os.stat(path)
        except FileNotFoundError:
            continue
        mode = stat.S_IMODE(found.st_mode)
        if mode & 0o077:
            os.chmod(path, DIRECTORY_MODE if stat.S_ISDIR(found.st_mode) else FILE_MODE)
            changed.append(f"{path} ({mode:04o})")
    if changed:
        log.warning("store files were open to other users, now to their owner alone: %s",
                    ", ".join(changed))
    return changed
