"""How the test apps report: one line appended to a file with one write
and O_APPEND, so lines from several processes never mix."""

import os


def append_line(path, line):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
