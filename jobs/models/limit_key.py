"""The rows that count a limit's running jobs and tokens, one per key (jobs.limits)."""

from django.db import models


class LimitKey(models.Model):
    """
    The state of one key of a limit (jobs.limits): how many of its jobs run
    now, and its rate's token bucket.

    The claim locks the row of every key it starts jobs of and counts them in
    (queries.limits.LIMITED_CLAIM); every statement that ends a run counts them out. The
    limits are copied from settings when the row is made, and again when a
    worker starts.
    """

    key = models.CharField(max_length=255, primary_key=True)
    name = models.CharField(max_length=100)
    concurrency = models.PositiveIntegerField(null=True, blank=True)
    rate = models.PositiveIntegerField(null=True, blank=True)
    # Seconds over which `rate` tokens refill.
    period = models.FloatField(null=True, blank=True)
    burst = models.PositiveIntegerField(null=True, blank=True)
    running = models.IntegerField(default=0)
    tokens = models.FloatField(default=0)
    refilled_at = models.DateTimeField()
    # When a claim last started jobs of this key as their own (NULL: never):
    # within a turn of the claim, the key served longest ago goes first.
    served_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "jobs_limit_key"
        ordering = ["key"]
        default_permissions = ("view",)
        indexes = [
            # The reconciliation recounts the keys that say jobs run.
            models.Index(
                "key", name="jobs_limit_key_running_idx", condition=models.Q(running__gt=0)
            ),
            models.Index("name", "key", name="jobs_limit_key_name_idx"),
        ]

    def __str__(self) -> str:
        return self.key
