"""The benchmark harness: its arithmetic, its report, and one real run of this queue."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import compare, driver, paired, remote, run, stats
from bench.report import (
    DASH,
    MISSING,
    TIMES,
    QueueResult,
    format_ratio,
    render,
    save,
    share_of_plain,
)
from bench.stats import ratio, summarize
from project.settings import BASE_DIR
from tests.conftest import database_url_for_subprocesses


def test_steady_rate_is_the_rate_between_10_and_90_percent_done():
    # 1,000 jobs: nothing for the first second (start-up), then 500 jobs/s.
    samples = [(0.5, 0), (1.0, 0)] + [(1.0 + t / 10, 50 * t) for t in range(1, 21)]
    assert driver.steady_rate(samples, 1_000) == pytest.approx(500)
    assert driver.steady_rate(samples[:10], 1_000) is None


def test_percentile_interpolates_like_numpy():
    values = [float(v) for v in range(1, 101)]
    assert stats.percentile(values, 50) == pytest.approx(50.5)
    assert stats.percentile(values, 99) == pytest.approx(99.01)
    assert stats.percentile([7.0], 99) == 7.0
    thousand = [float(v) for v in range(1, 1001)]
    assert stats.percentile(thousand, 99.9) == pytest.approx(999.001)


def test_a_limited_figure_is_a_share_of_the_plain_one_round_by_round():
    # The machine's speed drifted between rounds: the ratio of the medians
    # (12 / 20) says 60%, the rounds say 80%, 80% and 40%.
    ours = QueueResult("ours", "this queue", "setup")
    ours.figures["limits_off_steady_per_s"] = summarize([10.0, 20.0, 30.0])
    ours.figures["limited_wide_steady_per_s"] = summarize([8.0, 16.0, 12.0])
    assert share_of_plain(ours, "limited_wide_") == " (80% of the plain steady/s, round by round)"
    assert share_of_plain(ours, "limits_off_") == ""
    ours.figures["limited_wide_steady_per_s"] = summarize([6.0, None, 16.0])
    assert share_of_plain(ours, "limited_wide_") == ""


def test_summaries_skip_missing_repeats_and_ratios_are_ours_over_theirs():
    ours, theirs = summarize([3.0, None, 1.0, 2.0]), summarize([1.0, 1.0, 1.0])
    assert (ours.median, ours.min, ours.max) == (2.0, 1.0, 3.0)
    assert summarize([None, None]) is None
    assert ratio(ours, theirs) == 2.0
    assert ratio(ours, None) is None
    assert [format_ratio(v) for v in (123.4, 2.0, 0.05, None)] == [
        f"123{TIMES}",
        f"2.00{TIMES}",
        f"0.05{TIMES}",
        MISSING,
    ]


def result(name: str, **figures: list[float]) -> QueueResult:
    return QueueResult.from_driver(
        name, f"queue {name}", "setup", {"figures": figures, "notes": []}
    )


def test_report_has_medians_spreads_ratios_the_large_run_and_what_was_skipped():
    context = {
        "date": "2026-11-26 12:00 UTC",
        "machine": "2 cores",
        "postgres": "PostgreSQL 15",
        "command": "./scripts/bench.sh",
        "jobs": 10_000,
        "repeat": 3,
        "history_rows": 1_000_000,
        "large_jobs": 100_000,
    }
    ours = result("ours", jobs_per_s=[900.0, 1_000.0, 1_100.0], large_jobs_per_s=[2_000.0])
    peer = result("peer", jobs_per_s=[500.0, 500.0, 500.0], large_jobs_per_s=[400.0])
    slow = result("slow", jobs_per_s=[10.0])
    slow.notes.append("100,000 jobs not run: at 10 jobs/s they would take 167 min")
    skipped = QueueResult("celery", "Celery", "setup", status="skipped", reason="no Redis answers")
    report = render([ours, peer, slow, skipped], context)
    none = MISSING
    assert f"| queue ours | setup | {none} | {none} | 1,000 |" in report
    assert f"| queue ours | {none} | {none} | 900{DASH}1,100 |" in report
    assert f"| queue peer | {none} | {none} | 2.00{TIMES} |" in report
    assert f"| queue peer | 400 | {none} | 5.00{TIMES} |" in report
    assert "queue slow: 100,000 jobs not run" in report
    assert "Celery: skipped, no Redis answers" in report


def test_the_latency_tail_names_each_queues_longest_burst_and_every_probe_is_saved(tmp_path):
    context = {
        "date": "2026-12-02 12:00 UTC",
        "machine": "2 cores",
        "postgres": "PostgreSQL 15",
        "command": "./scripts/bench.sh",
        "jobs": 10_000,
        "repeat": 2,
        "history_rows": 1_000_000,
        "large_jobs": 100_000,
    }
    calm, stalled = [2.0] * 10, [2.0, 2.0, 9.0, 12.0, 7.0, 2.0, 5.0, 2.0, 2.0, 2.0]
    ours = QueueResult.from_driver(
        "ours",
        "this queue",
        "setup",
        {
            "figures": {"latency_p50_ms": [2.0, 2.0]},
            "series": {"latency_ms": [calm, stalled], "to_claim_ms": [[1.0] * 10, [3.0] * 10]},
        },
    )
    peer = QueueResult.from_driver(
        "peer", "queue peer", "setup", {"figures": {"latency_p50_ms": [2.0]},
        "series": {"latency_ms": [calm]}}
    )  # fmt: skip
    report = render([ours, peer], context)
    assert f"- this queue: longest burst 3 probe(s) from probe 2 of round 2, 7.0{DASH}12.0 ms" in (
        report
    )
    assert "- queue peer: longest burst 0 probe(s)" in report
    assert "the worker's wake-up): p50 2.00 ms, p99 3.00 ms, max 3.00 ms" in report
    save([ours, peer], context, report, tmp_path)
    lines = (tmp_path / "latency.csv").read_text().splitlines()
    assert lines[0] == "queue,round,probe,latency_ms"
    assert "ours,2,3,12.000" in lines
    assert len(lines) == 1 + 30


def test_the_large_run_is_left_out_for_a_queue_too_slow_for_it():
    queue = driver.Queue.__new__(driver.Queue)
    queue.options = driver.Options(dsn="", jobs=10_000, repeat=1, phases=[], timeout=60.0)
    queue.figures = {"jobs_per_s": [100.0, 120.0]}
    queue.notes = []
    queue.measure_large()
    assert queue.notes == ["100,000 jobs not run: at 110 jobs/s they would take 15 min"]
    assert "large_jobs_per_s" not in queue.figures


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--peers", "rq"], "unknown peer(s) rq"), (["--phases", "speed"], "unknown phase(s) speed")],
)
def test_bad_arguments_are_refused_by_name(argv, message, capsys):
    with pytest.raises(SystemExit) as exit:
        run.parse_args(argv)
    assert exit.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.processes
@pytest.mark.django_db(transaction=True)
def test_one_command_measures_this_queue_on_a_database_of_its_own(tmp_path):
    server = database_url_for_subprocesses().rsplit("/", 1)[0] + "/postgres"
    command = [
        sys.executable, "-m", "bench.run", "--peers", "none", "--jobs", "300", "--repeat", "1",
        "--phases", "enqueue,process,large,scale", "--large-jobs", "600", "--scale", "2",
        "--results", str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "BENCH_DATABASE_URL": server, "BENCH_DATABASE_PREFIX": "test_bench_"}
    env.pop("DATABASE_URL", None)
    done = subprocess.run(command, cwd=BASE_DIR, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    [ours] = json.loads((tmp_path / "latest.json").read_text())["queues"]
    assert ours["status"] == "ok", ours
    figures = {name: summary["median"] for name, summary in ours["figures"].items()}
    for name in (
        "enqueue_per_s", "batch_per_s", "jobs_per_s", "large_jobs_per_s",
        # Two workers started on a paused queue, timed from its resume.
        "scale_2_jobs_per_s",
    ):  # fmt: skip
        assert figures[name] > 0, name
    # The first job is seen done no later than the last: 300 jobs took 300 / jobs_per_s.
    # When one poll sees all 300 done, the two are the same time, up to rounding.
    assert 0 < figures["first_done_s"] <= 300 / figures["jobs_per_s"] * (1 + 1e-9)
    # Server-wide figures: anything else on the server adds to them.
    assert figures["write_xacts_per_job"] > 0
    assert figures["wal_bytes_per_job"] > 0
    assert "| this queue | 1 runworker, defaults |" in (tmp_path / "latest.md").read_text()


def test_rounds_take_every_queue_once_before_any_queue_again(monkeypatch, tmp_path):
    # A machine that slows down over a run would otherwise slow only the
    # queues that happen to run last, and bend every ratio.
    order, skipped = [], []

    def one_round(queue, args, url, skip=()):
        order.append(queue.name)
        skipped.append((queue.name, *skip))
        figures = {"jobs_per_s": [float(len(order))]}
        if queue.name != "celery":
            figures["large_jobs_per_s"] = [1.0]
        return {"figures": figures, "notes": ["a note"]}

    monkeypatch.setattr(run, "run_driver", one_round)
    monkeypatch.setattr(
        run, "peer_driver", lambda name: run.Driver(name, name, "setup", sys.executable, "x")
    )
    server = database_url_for_subprocesses().rsplit("/", 1)[0] + "/postgres"
    monkeypatch.setenv("BENCH_DATABASE_URL", server)
    argv = ["--peers", "pgqueuer,celery", "--repeat", "2", "--results", str(tmp_path)]
    assert run.main(argv) == 0
    assert order == ["ours", "pgqueuer", "celery"] * 2
    # Celery's first round had no large run (too slow for it): nor has its second.
    assert skipped[3:] == [("ours",), ("pgqueuer",), ("celery", "large")]
    queues = {q["name"]: q for q in json.loads((tmp_path / "latest.json").read_text())["queues"]}
    assert queues["pgqueuer"]["figures"]["jobs_per_s"]["min"] == 2.0
    assert queues["pgqueuer"]["figures"]["jobs_per_s"]["max"] == 5.0
    assert queues["ours"]["notes"] == ["a note"]


def test_pairs_alternate_which_side_runs_first():
    assert [paired.pair_order(i) for i in range(4)] == [("A", "B"), ("B", "A")] * 2


def test_ratios_are_b_over_a_within_each_pair_and_skip_pairs_missing_a_figure():
    assert paired.paired_ratios([100.0, None, 50.0, 0.0], [110.0, 90.0, 45.0, 1.0]) == [
        pytest.approx(1.1),
        pytest.approx(0.9),
    ]


def test_the_interval_of_the_median_is_the_sign_tests():
    # 12 values: the 3rd smallest and the 3rd largest cover the median 96% of the time.
    values = [float(v) for v in (12, 1, 11, 2, 10, 3, 9, 4, 8, 5, 7, 6)]
    assert paired.median_interval(values) == (3.0, 10.0)
    # 6 values are the fewest with a 95% interval: their extremes (96.9%).
    assert paired.median_interval([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) == (1.0, 6.0)
    assert paired.median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) is None


@pytest.mark.parametrize(
    ("interval", "higher_is_better", "expected"),
    [
        ((0.97, 1.02), True, "same"),
        (None, True, "same"),
        ((1.03, 1.08), True, "faster"),
        ((0.91, 0.96), True, "slower"),
        ((1.03, 1.08), False, "slower"),
        ((0.91, 0.96), False, "faster"),
    ],
)
def test_the_verdict_is_same_unless_the_interval_excludes_1(interval, higher_is_better, expected):
    assert paired.verdict(interval, higher_is_better) == expected


def compare_context() -> dict:
    sides = {
        label.lower(): {"label": label, "name": name, "describe": name, "jobs": f"/{name}/jobs"}
        for label, name in (("A", "v1"), ("B", "working tree"))
    }
    return {
        "date": "2026-12-07 12:00 UTC",
        "command": "./scripts/bench.sh --compare v1",
        "machine": "2 cores",
        "postgres": "PostgreSQL 15",
        "pairs": 8,
        "jobs": 2_000,
        "probes": 200,
        **sides,
    }


def test_the_comparison_reports_both_sides_the_ratio_and_a_verdict(tmp_path):
    # B enqueues 10% faster in every pair, whatever the machine's speed that pair.
    speeds = [1.0, 1.7, 1.2, 1.5, 1.0, 1.6, 1.3, 1.1]
    runs = {
        "A": [{"enqueue_per_s": 1_000 * s, "jobs_per_s": 500.0 + i} for i, s in enumerate(speeds)],
        "B": [{"enqueue_per_s": 1_100 * s, "jobs_per_s": 508.0 - i} for i, s in enumerate(speeds)],
    }
    rows = {row.figure.key: row for row in paired.compare(runs)}
    assert rows["enqueue_per_s"].median == pytest.approx(1.1)
    assert rows["enqueue_per_s"].verdict == "faster"
    assert rows["jobs_per_s"].verdict == "same"
    assert rows["wal_bytes_per_job"].a is None
    report = paired.render(list(rows.values()), compare_context())
    assert f"| enqueue one/s | 1,250 [1,000{DASH}1,700] | 1,375 [1,100{DASH}1,870] | 1.100 |" in (
        report
    )
    assert f"| 1.100{DASH}1.100 | faster |" in report
    assert f"| WAL bytes/job | {MISSING} | {MISSING} | {MISSING} | {MISSING} | same |" in report
    assert "- A: v1; jobs from /v1/jobs" in report
    paired.save(list(rows.values()), compare_context(), runs, report, tmp_path)
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["runs"] == runs
    assert saved["rows"][0]["ratio_interval"] == [pytest.approx(1.1)] * 2
    assert (tmp_path / "compare.md").read_text() == report


def test_compare_takes_its_own_defaults_and_refuses_no_pairs(capsys):
    args = run.parse_args(["--compare", "HEAD~1"])
    assert (args.compare, args.pairs, args.jobs, args.probes) == ("HEAD~1", 12, 2_000, 200)
    assert run.parse_args(["--compare", "HEAD", "--jobs", "500"]).jobs == 500
    assert run.parse_args([]).jobs == 10_000
    with pytest.raises(SystemExit):
        run.parse_args(["--compare", "HEAD", "--pairs", "0"])
    assert "--pairs and --probes take a number above 0" in capsys.readouterr().err


def test_compare_refuses_a_ref_that_names_no_commit(tmp_path, capsys):
    args = run.parse_args(["--compare", "no-such-ref", "--results", str(tmp_path)])
    assert compare.main(args, "unused", {}) == 1
    assert "'no-such-ref' names no commit" in capsys.readouterr().err


@pytest.mark.processes
@pytest.mark.django_db(transaction=True)
def test_compare_runs_the_working_tree_and_the_ref_each_from_its_own_tree(tmp_path):
    server = database_url_for_subprocesses().rsplit("/", 1)[0] + "/postgres"
    command = [
        sys.executable, "-m", "bench.run", "--compare", "HEAD", "--pairs", "2", "--jobs", "200",
        "--probes", "20", "--results", str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "BENCH_DATABASE_URL": server, "BENCH_DATABASE_PREFIX": "test_bench_"}
    env.pop("DATABASE_URL", None)
    done = subprocess.run(command, cwd=BASE_DIR, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads((tmp_path / "compare.json").read_text())
    a, b = saved["context"]["a"], saved["context"]["b"]
    # Each side imported jobs from its own tree: A's a temporary worktree, B's this one.
    assert b["jobs"] == str(BASE_DIR / "jobs" / "__init__.py")
    assert a["jobs"].endswith("/jobs/__init__.py") and not a["jobs"].startswith(str(BASE_DIR))
    for side in ("A", "B"):
        assert [run["jobs_per_s"] > 0 for run in saved["runs"][side]] == [True, True]
    report = (tmp_path / "compare.md").read_text()
    for label in ("enqueue one/s", "processed/s", "idle latency p99 ms", "commits/job"):
        assert f"| {label} |" in report
    # The temporary worktree is gone again, from the disk and from git's list.
    worktree = str(Path(a["jobs"]).parent.parent)
    listed = subprocess.run(["git", "worktree", "list"], cwd=BASE_DIR, capture_output=True)
    assert worktree not in listed.stdout.decode()


def test_the_workers_url_goes_through_the_relay_and_the_relay_to_the_server():
    dsn = "postgresql://postgres:s%40cret@db.example:6543/phases_ours"
    assert (
        remote.relayed(dsn, 40001) == "postgresql://postgres:s%40cret@127.0.0.1:40001/phases_ours"
    )
    assert remote.relay_target(dsn) == "db.example:6543"
    socket_dsn = "postgresql://postgres@%2Fvar%2Frun%2Fpostgresql/phases_ours"
    assert remote.relay_target(socket_dsn) == "/var/run/postgresql/.s.PGSQL.5432"
    assert [remote.label(delay) for delay in (None, 0.0, 0.5, 2.0)] == [
        "local",
        "0us",
        "500us",
        "2000us",
    ]


def test_the_report_has_the_remote_and_neighbour_tables():
    figures = {
        "remote_local_select1_p50_ms": [0.1, 0.1],
        "remote_local_1w_jobs_per_s": [13_000.0, 14_000.0],
        "remote_local_1w_p99_ms": [4.0, 5.0],
        "remote_2000us_select1_p50_ms": [2.2, 2.3],
        "remote_2000us_4w_jobs_per_s": [5_000.0, 6_000.0],
        "remote_2000us_4w_steady_per_s": [9_000.0, 9_000.0],
        "remote_2000us_4w_p50_ms": [6.0, 6.0],
        "remote_500us_1w_jobs_per_s": [9_000.0, 9_000.0],
        "neighbour_a_per_s": [20_000.0, 22_000.0],
        "neighbour_b_jobs": [60.0, 62.0],
        "neighbour_b_claim_p99_ms": [40.0, 80.0],
        "neighbour_b_start_max_ms": [90.0, 95.0],
    }
    ours = QueueResult.from_driver("ours", "this queue", "setup", {"figures": figures})
    context = {
        "date": "2026-12-07 12:00 UTC",
        "machine": "2 cores",
        "postgres": "PostgreSQL 15",
        "command": "./scripts/bench.sh",
        "jobs": 10_000,
        "repeat": 2,
        "history_rows": 1_000_000,
        "large_jobs": 100_000,
    }
    report = render([ours], context)
    none = MISSING
    rows = [line for line in report.splitlines() if line.startswith(("| no relay", "| relay"))]
    assert rows == [
        f"| no relay | 0.10 | 1 | 13,500 (13,000{DASH}14,000) | {none} | {none} | 4.5 |",
        f"| relay, 0.5 ms | {none} | 1 | 9,000 (9,000{DASH}9,000) | {none} | {none} | {none} |",
        f"| relay, 2 ms | 2.25 | 4 | 5,500 (5,000{DASH}6,000) | 9,000 (9,000{DASH}9,000)"
        f" | 6.0 | {none} |",
    ]
    assert "tenant A queues 100,000 jobs at once" in report
    assert (
        f"| 21,000 (20,000{DASH}22,000) | 61 | {none} | 60.0 | {none} | {none} | {none} | 92.5 |"
        in report
    )
    assert "B's p99 to the claim within 50 ms: missed." in report
