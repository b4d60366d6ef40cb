"""This process's open-file limit, raised as far as the system allows: a broker (and a process of
simulated nodes) holds one connection, so one file descriptor or more, per node."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("zimg")


def raise_open_file_limit() -> int | None:
    """Raise the soft open-file limit to the hard one (to 2**20 at least when the hard one is
    unlimited), and return the soft limit now; None if it is unlimited. Where raising is not
    allowed, the limit stays as it was."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    except (OSError, ValueError) as exc:  # not allowed here: keep what we have
        log.debug("could not raise the open-file limit: %s", exc)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft
