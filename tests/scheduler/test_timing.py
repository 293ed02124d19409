"""
When a schedule ticks: cron expressions and intervals in a time zone, checked
across DST with an injected "now" instead of sleeping.
"""

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from jobs.schedules import Timing, TimingError
from tests.scheduler.conftest import BERLIN


def berlin(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=BERLIN, fold=fold).astimezone(UTC)


def ticks(timing: Timing, after: datetime, count: int) -> list[datetime]:
    found = []
    for tick in timing.ticks_after(after):
        found.append(tick)
        if len(found) == count:
            return found
    return found


def local(moments: list[datetime]) -> list[str]:
    return [moment.astimezone(BERLIN).strftime("%m-%d %H:%M %Z") for moment in moments]


# DST: next-tick sequences with an injected "now", no sleeping.


def test_daily_0230_runs_once_on_the_spring_forward_day_at_0300():
    daily = Timing(cron="30 2 * * *", time_zone="Europe/Berlin")
    sequence = ticks(daily, berlin(2026, 3, 27, 12), 4)
    assert local(sequence) == [
        "03-28 02:30 CET",
        "03-29 03:00 CEST",  # 02:30 does not exist that day: once, as the clocks jump
        "03-30 02:30 CEST",
        "03-31 02:30 CEST",
    ]
    assert [tick - sequence[0] for tick in sequence[1:]] == [
        timedelta(hours=23, minutes=30),
        timedelta(hours=47),
        timedelta(hours=71),
    ]


def test_daily_0230_runs_once_on_the_fall_back_day():
    daily = Timing(cron="30 2 * * *", time_zone="Europe/Berlin")
    sequence = ticks(daily, berlin(2026, 10, 24, 12), 3)
    assert local(sequence) == ["10-25 02:30 CEST", "10-26 02:30 CET", "10-27 02:30 CET"]
    # From inside the repeated hour (02:15 CET, after 02:30 CEST went by), the
    # day's 02:30 has run: the next tick is tomorrow's, never the past one.
    second_pass = berlin(2026, 10, 25, 2, 15, fold=1)
    assert local([daily.next_after(second_pass)]) == ["10-26 02:30 CET"]
    assert daily.latest_at_or_before(second_pass) == berlin(2026, 10, 25, 2, 30)


def test_hourly_ticks_through_both_repeated_hours_and_skips_the_missing_one():
    hourly = Timing(cron="0 * * * *", time_zone="Europe/Berlin")
    fall = ticks(hourly, berlin(2026, 10, 25, 0, 30), 4)
    assert local(fall) == [
        "10-25 01:00 CEST",
        "10-25 02:00 CEST",
        "10-25 02:00 CET",
        "10-25 03:00 CET",
    ]
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(fall))
    spring = ticks(hourly, berlin(2026, 3, 29, 0, 30), 3)
    assert local(spring) == ["03-29 01:00 CET", "03-29 03:00 CEST", "03-29 04:00 CEST"]
    day = [t for t in ticks(hourly, berlin(2026, 10, 25, 0, 0) - timedelta(seconds=1), 30)]
    assert sum(1 for t in day if t.astimezone(BERLIN).date().day == 25) == 25
    day = [t for t in ticks(hourly, berlin(2026, 3, 29, 0, 0) - timedelta(seconds=1), 30)]
    assert sum(1 for t in day if t.astimezone(BERLIN).date().day == 29) == 23


def test_weekday_evening_report_skips_the_weekend_in_its_zone():
    report = Timing(cron="0 18 * * 1-5", time_zone="Europe/Berlin")
    sequence = ticks(report, berlin(2026, 3, 26, 19), 3)  # Thursday evening, before DST
    assert local(sequence) == ["03-27 18:00 CET", "03-30 18:00 CEST", "03-31 18:00 CEST"]
    assert [t.hour for t in sequence] == [17, 16, 16]  # UTC moves, Berlin time does not


def test_interval_counts_elapsed_seconds_across_dst():
    every_90 = Timing(interval=90, time_zone="Europe/Berlin")
    anchor = berlin(2026, 3, 29, 1, 59)  # the clocks jump at 02:00
    later = every_90.ticks_after(anchor, anchor)
    assert [next(later) - anchor for _ in range(3)] == [
        timedelta(seconds=s) for s in (90, 180, 270)
    ]
    # The grid stays on the anchor, whatever moment is asked about.
    assert every_90.next_after(anchor + timedelta(seconds=100), anchor) == anchor + timedelta(
        seconds=180
    )
    assert every_90.latest_at_or_before(
        anchor + timedelta(seconds=100), anchor
    ) == anchor + timedelta(seconds=90)
    # Without a previous tick, the first one is a whole interval from now.
    now = datetime(2026, 3, 29, 0, 0, 0, 250000, tzinfo=UTC)
    assert every_90.next_after(now) == datetime(2026, 3, 29, 0, 1, 31, tzinfo=UTC)


def test_bad_timings_are_refused_with_a_clear_message():
    with pytest.raises(
        TimingError, match=r"'61 \* \* \* \*' is not a valid cron expression \(Bad minute\)"
    ):
        Timing(cron="61 * * * *")
    with pytest.raises(TimingError, match="Expected five fields"):
        Timing(cron="every day")
    with pytest.raises(TimingError, match="Unknown time zone 'Europe/Berln'"):
        Timing(cron="0 * * * *", time_zone="Europe/Berln")
    with pytest.raises(TimingError, match="not both or neither"):
        Timing(cron="0 * * * *", interval=60)
    with pytest.raises(TimingError, match="at least 1"):
        Timing(interval=0)


def test_descriptions_in_words():
    assert Timing(cron="0 18 * * 1-5", time_zone="Europe/Berlin").describe() == (
        "At 18:00, Monday through Friday (Europe/Berlin)"
    )
    assert Timing(interval=90).describe() == "Every 90 seconds"
    assert Timing(interval=7200).describe() == "Every 2 hours"
