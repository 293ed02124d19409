"""
The end-of-day signup report, e-mailed to settings.ADMINS.

Declared in settings.JOBS_SCHEDULES as "signup-report" (18:00, Monday to
Friday); `runscheduler` enqueues it, a worker runs it on the "reports" queue.
"""

from datetime import date, datetime, time, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.mail import mail_admins
from django.tasks import task
from django.utils import timezone


@task(queue_name="reports", max_attempts=3)
def send_signup_report(day: str | None = None) -> dict[str, Any]:
    """
    Mail the admins how many people signed up on `day` (an ISO date; today by default).

    The day is the project's TIME_ZONE day, the zone the schedule ticks in.
    """
    report_day = date.fromisoformat(day) if day else timezone.localdate()
    start = timezone.make_aware(datetime.combine(report_day, time.min))
    end = timezone.make_aware(datetime.combine(report_day + timedelta(days=1), time.min))
    users = get_user_model().objects
    signups = users.filter(date_joined__gte=start, date_joined__lt=end).count()
    total = users.filter(date_joined__lt=end).count()
    when = f"{report_day:%A %d %B %Y}"
    mail_admins(
        f"Signups on {when}: {signups}",
        f"{signups} new account(s) on {when} ({timezone.get_current_timezone_name()}).\n"
        f"{total} account(s) in all at the end of the day.\n",
    )
    return {"day": report_day.isoformat(), "signups": signups, "total": total}
