"""The sink's bounded in-order map: frames between keyframes are tracked on several threads and
written in input order, without a window's images piling up ahead of the writer."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from stream4d.pipeline.sink import in_order


def test_results_come_in_input_order_when_later_items_finish_first():
    def slow_first(i: int) -> int:
        time.sleep(0.02 * (5 - i % 5))
        return i * i

    with ThreadPoolExecutor(3) as pool:
        assert list(in_order(pool, slow_first, range(12), ahead=4)) == [i * i for i in range(12)]


def test_no_more_than_ahead_items_are_started_before_the_consumer_takes_them():
    started, consumed, worst = 0, 0, 0
    lock = threading.Lock()

    def work(i: int) -> int:
        nonlocal started, worst
        with lock:
            started += 1
            worst = max(worst, started - consumed)
        return i

    with ThreadPoolExecutor(2) as pool:
        for i, result in enumerate(in_order(pool, work, range(20), ahead=3)):
            time.sleep(0.005)  # a slow consumer: the pool could otherwise run far ahead
            assert result == i
            with lock:
                consumed += 1
    assert started == 20 and worst <= 3
