"""Work prepared ahead on a background thread while the caller uses what came before: files
read and featurised while a batch decodes (transcribe, batch, eval on a GPU)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor


def prefetched(prepare, items: list, ahead: int = 4) -> Iterator[tuple[object, object]]:
    """(item, prepare(item) or the exception it raised), in order, with up to `ahead` + 1 items
    prepared or queued by one background thread while the caller works on an earlier one:
    reading and featurising files overlaps decoding (libsndfile and torch release the GIL).
    One thread, so a stateful VAD model is never used by two at once."""

    def attempt(item):
        try:
            return prepare(item)
        except Exception as error:  # handed to the caller in the item's place, in order
            return error

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="svlora-prepare")
    queued: deque = deque()
    remaining = iter(items)

    def top_up() -> None:
        for item in remaining:
            queued.append((item, pool.submit(attempt, item)))
            if len(queued) > ahead:
                return

    try:
        top_up()
        while queued:
            item, future = queued.popleft()
            top_up()
            yield item, future.result()
    finally:  # the caller stopped early (an error, a break): drop what was not started
        pool.shutdown(wait=True, cancel_futures=True)
