"""Domain errors: every failure the CLI reports, with the exit code it maps to.

Callers below the CLI raise these instead of raw netlink/OS errors so that the user
sees one clear line and a meaningful exit status.
"""

import re


MAX_LINE = 400
_LONG_WORD = re.compile(r"\S{81,}")


def one_line(msg: str) -> str:
    """An error message as one readable line: newlines escaped, any word over 80 characters
    cut (a 10 MB value echoed whole is no message), the whole kept under MAX_LINE."""
    msg = msg.replace("\r", "\\r").replace("\n", "\\n")
    msg = _LONG_WORD.sub(lambda m: f"{m.group()[:60]}...({len(m.group())} characters)", msg)
    return msg if len(msg) <= MAX_LINE else f"{msg[:MAX_LINE - 30]}...({len(msg)} characters)"


class NetlabError(Exception):
    """A failure to report as one line; exit code 1."""

    exit_code = 1


class UsageError(NetlabError):
    """Bad input (lab file, arguments, manifests): exit code 2, nothing changed."""

    exit_code = 2

    def __init__(self, *args):
        if len(args) == 1 and isinstance(args[0], str):
            args = (one_line(args[0]),)  # bad input may be huge or hold newlines
        super().__init__(*args)


class NotRoot(NetlabError):
    exit_code = 1


class LabBusy(NetlabError):
    exit_code = 1


class LabNotUp(NetlabError):
    exit_code = 1


class KernelError(NetlabError):
    """A netlink, iptables or process operation failed."""


class NotFound(KernelError):
    pass


class AlreadyExists(KernelError):
    pass
