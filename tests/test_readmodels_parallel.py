"""``parallel.in_order``: results in the items' order, whoever computed them; the writer
works on later items here rather than wait for the next result."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from projections.readmodels.parallel import in_order


def test_results_come_in_order_with_items_done_here_while_waiting():
    done_here: list[int] = []
    started = threading.Event()

    def there(item: int) -> tuple[str, int]:
        started.wait(5)  # the worker is slow to start: the writer gets on with later items
        time.sleep(0.01)
        return ("there", item * item)

    def here(item: int) -> tuple[str, int]:
        done_here.append(item)
        started.set()
        return ("here", item * item)

    with ThreadPoolExecutor(1) as executor:
        results = list(in_order(executor, there, here, range(20), ahead=4))
    assert [value for _, value in results] == [n * n for n in range(20)]
    assert [n for n, (where, _) in enumerate(results) if where == "here"] == sorted(done_here)
    assert done_here and any(where == "there" for where, _ in results)
