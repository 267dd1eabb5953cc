"""The writer of a process-backend app's log file: `python -m services.commander.logtee FD`.

The app's stdout arrives on this program's stdin and its stderr on descriptor FD; each line is
written to its stdout, the app's log file opened for appending by the commander, as
`<unix time> <out|err> <text>` (logfiles.parse reads it back), so a tail
tells when a line was written and on which stream. A process of its own, in its own session,
rather than a reader in the commander: apps outlive a commander restart by design, and a pipe
whose reader died would end them with SIGPIPE at their next write. It exits when both pipes
close (the app and whatever inherited its descriptors are gone). Standard library only: one
starts per app start.
"""

from __future__ import annotations

import os
import selectors
import sys
import time

MAX_LINE = 64 * 1024  # a longer run without a newline is written as lines of this size


def stamp(tag: str, text: bytes) -> bytes:
    return b"%.6f %s %s\n" % (time.time(), tag.encode(), text)


def main(err_fd: int) -> None:
    out = 1  # O_APPEND (logfiles.open_for_child): writes land at the end after a rotation
    sel = selectors.DefaultSelector()
    partial = {0: b"", err_fd: b""}
    tags = {0: "out", err_fd: "err"}
    for fd in partial:
        sel.register(fd, selectors.EVENT_READ)
    while partial:
        for key, _ in sel.select():
            fd = key.fd
            chunk = os.read(fd, 65536)
            data = partial[fd] + chunk
            *lines, rest = data.split(b"\n")
            while len(rest) > MAX_LINE:
                lines.append(rest[:MAX_LINE])
                rest = rest[MAX_LINE:]
            if not chunk:  # the writers are gone: what is left is the last line
                if rest:
                    lines.append(rest)
                sel.unregister(fd)
                os.close(fd)
                del partial[fd]
            else:
                partial[fd] = rest
            if lines:
                os.write(out, b"".join(stamp(tags[fd], line) for line in lines))


if __name__ == "__main__":
    main(int(sys.argv[1]))
