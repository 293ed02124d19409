"""A limit's values changed at runtime, and the record of each change (jobs.limit_overrides)."""

from django.db import models


class LimitOverride(models.Model):
    """
    Values of a limit of LIMITS that replace its settings' until removed, for
    one key of it or for all (key ""), written by jobs.limit_overrides.

    The key rows (LimitKey) hold the values they run with: setting or removing
    an override rewrites them in the same transaction, and a key row made
    later takes the override as it is made (queries.enqueue.ENSURE_LIMIT_KEYS).
    A value left NULL is not overridden; a rate comes with its period and burst.
    """

    name = models.CharField(max_length=100)
    # "" for every key of the limit, else one key's text (its row's key without "name:").
    key = models.CharField(max_length=255, blank=True, default="")
    concurrency = models.PositiveIntegerField(null=True, blank=True)
    rate = models.PositiveIntegerField(null=True, blank=True)
    period = models.FloatField(null=True, blank=True)
    burst = models.PositiveIntegerField(null=True, blank=True)
    changed_at = models.DateTimeField()
    changed_by = models.CharField(max_length=150, blank=True)

    class Meta:
        db_table = "jobs_limit_override"
        ordering = ["name", "key"]
        constraints = [
            models.UniqueConstraint(fields=["name", "key"], name="jobs_limit_override_name_key"),
        ]
        default_permissions = ("view",)
        permissions = [("change_limit", "Can change a limit at runtime")]

    def __str__(self) -> str:
        return f"{self.name}:{self.key}" if self.key else self.name


class LimitChange(models.Model):
    """One change of a limit at runtime: who, when, through what, its values before and after."""

    changed_at = models.DateTimeField(db_index=True)
    changed_by = models.CharField(max_length=150, blank=True)
    # Where the change was made: "admin", "command" or "code".
    via = models.CharField(max_length=20)
    name = models.CharField(max_length=100)
    key = models.CharField(max_length=255, blank=True, default="")
    before = models.CharField(max_length=200)
    after = models.CharField(max_length=200)

    class Meta:
        db_table = "jobs_limit_change"
        ordering = ["-changed_at", "-id"]
        default_permissions = ("view",)

    def __str__(self) -> str:
        scope = f"{self.name}:{self.key}" if self.key else self.name
        return f"{scope}: {self.before} → {self.after}"
