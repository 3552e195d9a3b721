import threading
import time

import pytest

from server.jobs import JobFailedError, JobState, LocalJobRunner, UnknownJobError


def _wait(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def test_job_result_is_the_executor_return_value():
    runner = LocalJobRunner(lambda spec, stop: sum(spec), workers=1)
    runner.submit("a", [1, 2, 3])
    assert runner.results("a", timeout=10) == 6
    assert runner.status("a").state is JobState.SUCCEEDED
    runner.shutdown()


def test_no_more_than_workers_jobs_run_at_once():
    running, peak, lock = [0], [0], threading.Lock()

    def work(spec, stop):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return spec

    runner = LocalJobRunner(work, workers=2)
    for i in range(6):
        runner.submit(str(i), i)
    assert [runner.results(str(i), timeout=10) for i in range(6)] == list(range(6))
    assert peak[0] == 2
    runner.shutdown()


def test_cancel_sets_the_stop_event_of_a_running_job():
    started = threading.Event()

    def work(spec, stop):
        started.set()
        assert stop.wait(10)
        return "stopped"

    runner = LocalJobRunner(work, workers=1)
    runner.submit("a", None)
    started.wait(5)
    assert runner.status("a").state is JobState.RUNNING
    assert runner.cancel("a")
    with pytest.raises(JobFailedError, match="cancelled"):
        runner.results("a", timeout=10)
    assert runner.status("a").state is JobState.CANCELLED
    assert not runner.cancel("a")
    runner.shutdown()


def test_cancelled_queued_job_never_runs():
    gate, ran = threading.Event(), []
    runner = LocalJobRunner(lambda spec, stop: (gate.wait(10), ran.append(spec)), workers=1)
    runner.submit("first", 1)
    runner.submit("second", 2)
    assert runner.status("second").state is JobState.QUEUED
    assert runner.cancel("second")
    gate.set()
    runner.results("first", timeout=10)
    with pytest.raises(JobFailedError, match="before it started"):
        runner.results("second", timeout=10)
    assert ran == [1]
    runner.shutdown()


def test_failed_job_reports_its_exception():
    def work(spec, stop):
        raise ValueError("bad frame 7")

    runner = LocalJobRunner(work, workers=1)
    runner.submit("a", None)
    with pytest.raises(JobFailedError, match="ValueError: bad frame 7"):
        runner.results("a", timeout=10)
    status = runner.status("a")
    assert status.state is JobState.FAILED and status.error == "ValueError: bad frame 7"
    assert status.finished_at >= status.started_at >= status.submitted_at
    runner.shutdown()


def test_unknown_job_and_duplicate_submit_are_refused():
    gate = threading.Event()
    runner = LocalJobRunner(lambda spec, stop: gate.wait(10), workers=1)
    with pytest.raises(UnknownJobError):
        runner.status("nope")
    runner.submit("a", None)
    with pytest.raises(ValueError, match="already"):
        runner.submit("a", None)
    gate.set()
    runner.results("a", timeout=10)
    runner.submit("a", None)  # a finished id may be reused (a resumed session)
    runner.results("a", timeout=10)
    runner.forget("a")
    with pytest.raises(UnknownJobError):
        runner.status("a")
    runner.shutdown()


def test_results_times_out_while_the_job_runs():
    gate = threading.Event()
    runner = LocalJobRunner(lambda spec, stop: gate.wait(10), workers=1)
    runner.submit("a", None)
    with pytest.raises(TimeoutError):
        runner.results("a", timeout=0.05)
    gate.set()
    _wait(lambda: runner.status("a").state is JobState.SUCCEEDED)
    runner.shutdown()
