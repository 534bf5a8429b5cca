"""Ending tasks for sure.

``task.cancel()`` followed by ``await asyncio.gather(task, return_exceptions=True)`` can wait
forever on Python 3.11: ``asyncio.wait_for`` swallows a cancellation that arrives while the
future it waits for has just completed (CPython gh-86296, fixed in 3.12), and the task goes on
as if it was never cancelled. aiomqtt's ``publish()`` awaits its QoS 1 PUBACK with
``wait_for``: a PUBACK that comes in the same turn as the cancel lets the publishing task
carry on to its next wait, and the gather after it never returns. :func:`cancel_and_wait`
asks again until every task has ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any, Final

__all__ = ["RECANCEL_S", "STOP_RECANCEL_S", "cancel_and_wait", "until_one_ends"]

RECANCEL_S: Final = 0.2  # a task still running this long after its cancel is cancelled again
# For a connection's stop(): longer than a graceful disconnect (DISCONNECT and close) takes,
# short enough that a lost cancel costs one such wait.
STOP_RECANCEL_S: Final = 1.0


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]], recancel_s: float = RECANCEL_S
) -> None:
    """Cancel ``tasks`` and return once every one has ended, cancelling again every
    ``recancel_s`` those that carry on. For tasks whose cancellation needs no awaits of its
    own (a second cancel would cut those short). Their exceptions are taken (never logged as
    unretrieved), as ``gather(..., return_exceptions=True)`` does; the caller reads what it
    wants from them. If the caller is cancelled meanwhile, the tasks are cancelled once more
    and the caller's cancellation goes on."""
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    ended = [task for task in tasks if task.done()]
    try:
        while pending:
            for task in pending:
                task.cancel()
            done, pending = await asyncio.wait(pending, timeout=recancel_s)
            ended += done
    except asyncio.CancelledError:
        for task in pending:
            task.cancel()
        raise
    finally:
        for task in ended:
            if not task.cancelled():
                task.exception()  # retrieved: no "exception was never retrieved" at collection


async def until_one_ends(
    tasks: Sequence[asyncio.Task[Any]], recancel_s: float = RECANCEL_S
) -> None:
    """Wait until one of ``tasks`` ends (a session's sender and its watcher: the first to end
    ends the session), then end the others with :func:`cancel_and_wait`, also when the caller
    is cancelled meanwhile. Raises the exception that ended one (the first in ``tasks``'
    order); returns if none had one."""
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(tasks, recancel_s=recancel_s)
    for task in tasks:
        if task in done:
            task.result()
