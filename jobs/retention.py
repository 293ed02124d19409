"""
How long finished jobs are kept: the backend's RETAIN_SUCCESSFUL and
RETAIN_FAILED, and RETAIN, its rules for some tasks and queues.

    TASKS = {"default": {"BACKEND": "jobs.backend.PostgresBackend", "OPTIONS": {
        "RETAIN_SUCCESSFUL": 7 * 24 * 3600,
        "RETAIN": {
            "payments": {"tasks": ["shop.tasks.charge_card"], "successful": 90 * 24 * 3600},
            "pings": {"queues": ["health"], "successful": 3600, "failed": 24 * 3600},
        },
    }}}

A rule names tasks or queues and keeps their SUCCESSFUL jobs `successful`
seconds, their FAILED and CANCELLED ones `failed` seconds (None: for ever); a
duration it leaves out is the backend's. A job takes its task's rule, else
its queue's, when it is enqueued, and keeps the rule's name in its
`retention` column (a job under no rule stores nothing there).

Why the name is stored rather than matched when a prune runs: each rule's
prune then reads only its own jobs (jobs_job_retained_idx, by rule), and the
backend's prune only jobs under no rule (jobs_job_finished_idx, whose rows
have no rule). A prune that matched task paths would step, at every worker's
heartbeat, over every job a longer rule keeps past the backend's retention:
payments kept 90 days would be read again every few seconds, however few of
them expire. So a rule's durations are read at each prune and apply to the
jobs it holds already; a task moved to another rule has its new jobs kept by
that rule; the jobs of a rule taken out of RETAIN are kept as the backend's
retention says, by a prune that runs less often (ORPHANED_PRUNE_INTERVAL
in jobs.worker.maintenance).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

# The statuses that each of a rule's durations keeps.
SUCCESSFUL = ("SUCCESSFUL",)
FAILED = ("FAILED", "CANCELLED")
# The longest rule name: the length of the retention column.
MAX_RULE_NAME = 64

_KNOWN = {"tasks", "queues", "successful", "failed"}


class RetentionConfigurationError(ValueError):
    """RETAIN cannot be used; the message says which rule is wrong, and how."""


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """One entry of RETAIN: the tasks or queues it names and how long it keeps their jobs."""

    name: str
    tasks: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    # "successful" and "failed", in seconds (None: for ever), as far as the
    # rule sets them: the backend's RETAIN_SUCCESSFUL and RETAIN_FAILED
    # apply to the others.
    durations: Mapping[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PrunePass:
    """
    One read of the finished jobs that a prune deletes: those of `statuses`
    finished more than `older_than` seconds ago (None: kept for ever), under
    `rule`, under no rule (None), or, with `orphaned`, under a rule that
    RETAIN no longer has (`rule` then names none).
    """

    statuses: tuple[str, ...]
    older_than: float | None
    rule: str | None = None
    orphaned: bool = False
    # The backend whose rules these are: a rule's name is its backend's own,
    # and two backends on one database may name rules alike, or not at all.
    backend: str = "default"

    @property
    def label(self) -> str:
        statuses = "/".join(self.statuses)
        if self.orphaned:
            return f"{statuses} of rules no longer in RETAIN"
        return statuses if self.rule is None else f"{statuses} of {self.rule}"


@dataclass(frozen=True, slots=True)
class Retention:
    """RETAIN, parsed: its rules by name, and which rule a task or queue falls under."""

    rules: tuple[RetentionRule, ...] = ()
    by_task: Mapping[str, str] = field(default_factory=dict)
    by_queue: Mapping[str, str] = field(default_factory=dict)
    # False when RETAIN could not be read (jobs.E010): its rules are then
    # unknown, not absent, and no job is taken for one of a rule taken out.
    usable: bool = True

    def __bool__(self) -> bool:
        return bool(self.rules)

    def rule_of(self, task_path: str, queue: str) -> str | None:
        """The rule that keeps a job of this task on this queue (None: the backend's)."""
        return self.by_task.get(task_path) or self.by_queue.get(queue)

    def passes(
        self,
        successful: float | None,
        failed: float | None,
        *,
        backend: str,
        orphaned: bool = False,
    ) -> list[PrunePass]:
        """
        The reads of a whole prune, given the backend's own durations: the
        jobs under no rule, then each rule's; with `orphaned`, those of rules
        taken out of RETAIN too, unless RETAIN could not be read.
        """
        passes = [PrunePass(SUCCESSFUL, successful), PrunePass(FAILED, failed)]
        for rule in self.rules:
            durations = rule.durations
            passes += [
                PrunePass(
                    SUCCESSFUL, durations.get("successful", successful), rule.name, False, backend
                ),
                PrunePass(FAILED, durations.get("failed", failed), rule.name, False, backend),
            ]
        if orphaned and self.usable:
            passes += [
                PrunePass(SUCCESSFUL, successful, orphaned=True, backend=backend),
                PrunePass(FAILED, failed, orphaned=True, backend=backend),
            ]
        return passes

    @property
    def names(self) -> list[str]:
        """The rules' names: a job with another name in `retention` is of a rule taken out."""
        return [rule.name for rule in self.rules]


# What reads a duration: seconds, 0 or more, or None for ever; a ValueError
# says what it must be (jobs.options.delay_or_none).
DurationParser = Callable[[object], float | None]


def parse_retention(setting: object, duration: DurationParser) -> Retention:
    """The RETAIN option as a Retention, or a RetentionConfigurationError naming the bad rule."""
    if setting is None:
        return Retention()
    if not isinstance(setting, Mapping):
        raise RetentionConfigurationError("RETAIN is a dict of rule names to their settings.")
    rules = tuple(_parse_rule(name, spec, duration) for name, spec in setting.items())
    by_task: dict[str, str] = {}
    by_queue: dict[str, str] = {}
    for rule in rules:
        for names, owners, what in (
            (rule.tasks, by_task, "task"),
            (rule.queues, by_queue, "queue"),
        ):
            for name in names:
                if name in owners:
                    raise RetentionConfigurationError(
                        f"RETAIN: {what} {name!r} is in rules {owners[name]!r} and "
                        f"{rule.name!r}; a {what} is kept by one rule."
                    )
                owners[name] = rule.name
    return Retention(rules, by_task, by_queue)


def _parse_rule(name: object, spec: object, duration: DurationParser) -> RetentionRule:
    if not isinstance(name, str) or not name or len(name) > MAX_RULE_NAME:
        raise RetentionConfigurationError(
            f"RETAIN: rule name {name!r} must be a non-empty string of at most "
            f"{MAX_RULE_NAME} characters."
        )
    if not isinstance(spec, Mapping):
        raise RetentionConfigurationError(
            f"RETAIN: rule {name!r} is a dict, not {type(spec).__name__}."
        )
    unknown = sorted(set(spec) - _KNOWN)
    if unknown:
        raise RetentionConfigurationError(
            f"RETAIN: rule {name!r} has unknown settings {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_KNOWN))}."
        )
    tasks, queues = spec.get("tasks", ()), spec.get("queues", ())
    for label, values in (("tasks", tasks), ("queues", queues)):
        if not isinstance(values, list | tuple) or not all(
            isinstance(v, str) and v for v in values
        ):
            raise RetentionConfigurationError(f"RETAIN: rule {name!r}: {label} is a list of names.")
    if not tasks and not queues:
        raise RetentionConfigurationError(f"RETAIN: rule {name!r} names no task and no queue.")
    if "successful" not in spec and "failed" not in spec:
        raise RetentionConfigurationError(
            f"RETAIN: rule {name!r} sets neither successful nor failed, so it keeps its "
            "jobs as the backend does."
        )
    durations = {}
    for key in ("successful", "failed"):
        if key not in spec:
            continue
        try:
            durations[key] = duration(spec[key])
        except ValueError as error:
            raise RetentionConfigurationError(
                f"RETAIN: rule {name!r}: {key} is {spec[key]!r}; it must be {error}."
            ) from None
    return RetentionRule(name, tuple(tasks), tuple(queues), durations)
