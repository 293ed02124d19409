"""One pass of the scheduler: each due tick enqueued once, disabled schedules left alone."""

from datetime import timedelta

from django.utils import timezone

from jobs.models import Schedule
from jobs.scheduler.runner import unique_key
from tests.scheduler.conftest import T0, make_schedule, schedule_jobs


def test_one_pass_enqueues_each_due_tick_once_with_its_unique_key(scheduler):
    schedule = make_schedule(cron="* * * * * *", catch_up="skip")
    Schedule.objects.filter(id=schedule.id).update(next_run_at=T0)
    scheduler.run_due(now=T0 + timedelta(seconds=2, milliseconds=500))
    assert [job.unique_key for job in schedule_jobs(schedule)] == [
        unique_key(schedule.id, T0 + timedelta(seconds=n)) for n in range(3)
    ]
    # The same moment again: the ticks were advanced past, nothing more.
    assert scheduler.run_due(now=T0 + timedelta(seconds=2, milliseconds=900)) == (0, [])
    assert len(schedule_jobs(schedule)) == 3


def test_disabled_schedule_is_not_claimed_and_re_enabling_does_not_catch_up(scheduler):
    schedule = make_schedule()
    Schedule.objects.filter(id=schedule.id).update(next_run_at=T0)
    schedule.refresh_from_db()
    schedule.enabled = False
    schedule.save()
    assert scheduler.run_due(now=T0 + timedelta(hours=1)) == (0, [])
    schedule.enabled = True
    schedule.save()
    schedule.refresh_from_db()
    assert schedule.next_run_at > timezone.now()


def test_a_save_without_timing_changes_never_writes_next_run_at_back(db):
    schedule = make_schedule()
    stale = Schedule.objects.get(id=schedule.id)  # an admin form opened now
    Schedule.objects.filter(id=schedule.id).update(next_run_at=T0 + timedelta(days=400))
    stale.priority = 10
    stale.save()
    schedule.refresh_from_db()
    assert schedule.priority == 10
    assert schedule.next_run_at == T0 + timedelta(days=400)
