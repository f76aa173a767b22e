"""Domain errors: every failure the CLI reports, with the exit code it maps to.

Callers below the CLI raise these instead of raw netlink/OS errors so that the user
sees one clear line and a meaningful exit status.
"""


class NetlabError(Exception):
    """A failure to report as one line; exit code 1."""

    exit_code = 1


class UsageError(NetlabError):
    """Bad input (lab file, arguments, manifests): exit code 2, nothing changed."""

    exit_code = 2


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
