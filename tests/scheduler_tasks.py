"""
The task of the frozen-scheduler test, and the freeze itself.

A scheduler can be stopped (SIGSTOP, a paused VM, a network partition) at any
moment, and the one that matters is inside a pass, between the statements of
its transaction, while it holds a schedule's row lock. A test cannot hit that
moment from outside by timing, so the scheduler stops itself there: when the
file named by TEST_FREEZE_REQUEST exists, the first scheduler to enqueue
`tick` afterwards takes the request (renames it to <name>.taken, which only
one process can do), writes its pid there and sends itself SIGSTOP, right
after inserting the tick's job and before its pass commits. The test
continues it with SIGCONT.
"""

import os
import signal
from pathlib import Path

from django.dispatch import receiver
from django.tasks import TaskResult, task
from django.tasks.signals import task_enqueued


@task
def tick() -> None:
    """Does nothing: the test looks at which ticks were enqueued, once each, and when."""


@receiver(task_enqueued)
def freeze_inside_the_pass(sender: type, task_result: TaskResult, **kwargs: object) -> None:
    """Stop this process inside its pass when the test asks for it (see the module doc)."""
    request = os.environ.get("TEST_FREEZE_REQUEST")
    if not request or task_result.task.func is not tick.func:
        return
    taken = Path(f"{request}.taken")
    try:
        os.rename(request, taken)
    except FileNotFoundError:
        return  # no request, or another scheduler took it
    taken.write_text(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGSTOP)
