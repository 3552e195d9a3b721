import queue
import threading

import pytest
from align_scenes import plane_windows

from align.aligner import AlignConfig, AlignmentError, StreamAligner
from align.worker import AlignmentWorker


@pytest.fixture(scope="module")
def windows(plane_scene):
    return plane_windows(plane_scene, 6, 2, seed=0)


def test_worker_aligns_windows_in_order_off_the_callers_thread(windows):
    seen = []
    caller = threading.get_ident()
    with AlignmentWorker(StreamAligner(AlignConfig(window=6, overlap=2)), maxsize=2,
                         on_aligned=lambda w: seen.append((w.window_index, threading.get_ident()))) as worker:
        for pred in windows:
            worker.submit(pred)
    assert [i for i, _ in seen] == list(range(len(windows)))
    assert all(t != caller for _, t in seen)


def test_submit_blocks_once_the_bounded_queue_is_full(windows):
    release = threading.Event()
    started = threading.Event()

    def slow_consumer(_):
        started.set()
        release.wait(timeout=30)

    worker = AlignmentWorker(StreamAligner(AlignConfig(window=6, overlap=2)), maxsize=1, on_aligned=slow_consumer)
    worker.submit(windows[0])
    assert started.wait(timeout=30)  # window 0 is being handled and holds the thread
    worker.submit(windows[1], timeout=5)  # fills the one queue slot
    with pytest.raises(queue.Full):
        worker.submit(windows[2], timeout=0.2)
    assert worker.pending == 1
    release.set()
    worker.submit(windows[2], timeout=30)
    worker.close()


def test_worker_errors_are_raised_in_the_callers_thread(windows):
    worker = AlignmentWorker(StreamAligner(AlignConfig(window=6, overlap=2)), maxsize=2)
    worker.submit(windows[0])
    worker.submit(windows[2])  # shares no frame with window 0
    with pytest.raises(AlignmentError, match="shares no frame"):
        worker.close()
    with pytest.raises(AlignmentError):
        worker.submit(windows[3])  # a failed worker refuses more work


def test_callback_errors_propagate_too(windows):
    def broken(_):
        raise RuntimeError("viewer went away")

    worker = AlignmentWorker(StreamAligner(AlignConfig(window=6, overlap=2)), on_aligned=broken)
    worker.submit(windows[0])
    with pytest.raises(RuntimeError, match="viewer went away"):
        worker.close()


def test_submit_after_close_is_refused(windows):
    worker = AlignmentWorker(StreamAligner(AlignConfig(window=6, overlap=2)))
    worker.close()
    with pytest.raises(RuntimeError, match="after close"):
        worker.submit(windows[0])
    with pytest.raises(ValueError, match="maxsize"):
        AlignmentWorker(StreamAligner(), maxsize=0)
