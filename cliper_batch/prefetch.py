"""Run an iterator on a background thread, a bounded number of items ahead of its consumer.

Why: in ``--faces detect`` pass 1 the decoder (PyAV/FFmpeg, which releases the
GIL while it decodes and scales) and the face detector (torch, which releases
it inside its ops) used to take turns: the detector waited for a chunk, then
the decoder waited for the detector. :func:`prefetch` lets the next chunk
decode while the current one is detected. It is the only concurrency the
per-video algorithm has, so it is written once, here, and wrapped around the
one frame source (:func:`cliper_batch.video_annotation.frame_chunks`).

Guarantees:

* **Order and values** are those of the wrapped iterator.
* **Bounded**: the producer starts item ``k + depth`` only after the consumer
  has taken item ``k``, so at most ``depth`` items exist beyond the one the
  consumer holds (``depth=1``: one chunk ahead).
* **Errors propagate in place**: an exception raised by the wrapped iterator
  (including one raised by a callback it runs, such as the per-video timeout)
  is re-raised to the consumer, with its type and traceback, where the item
  would have been; items produced before it are delivered first.
* **The thread always stops**: when the consumer stops early - an error of its
  own, ``close()``, garbage collection - the producer is told to stop, the
  wrapped iterator is closed *on the producer thread* (a generator cannot be
  closed from another thread while it runs), and the thread is joined before
  control returns. The join waits for at most the one item in production.
  Nothing keeps running after the generator is finished, whichever way it ends.

The wrapped iterator runs entirely on the producer thread, so it must not be
advanced by anyone else meanwhile; thread-local state it relies on (e.g. torch
thread settings) is that of a fresh thread.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["prefetch"]

T = TypeVar("T")

_ITEM, _END, _ERROR = "item", "end", "error"


def prefetch(items: Iterable[T], depth: int = 1, name: str = "prefetch") -> Iterator[T]:
    """Yield ``items`` in order while a daemon thread produces up to ``depth`` items ahead (module docstring).

    ``depth=0`` runs the iterator inline (no thread): the same values, one after the other.
    """
    if not isinstance(depth, int) or depth < 0:
        raise ValueError(f"prefetch depth must be an int >= 0, got {depth!r}")
    if depth == 0:
        yield from items
        return
    out: queue.SimpleQueue = queue.SimpleQueue()
    slots = threading.Semaphore(depth)  # items the producer may make beyond the one the consumer holds
    stop = threading.Event()

    def produce() -> None:
        it = iter(items)
        try:
            while True:
                slots.acquire()
                if stop.is_set():
                    return
                try:
                    item = next(it)
                except StopIteration:
                    out.put((_END, None))
                    return
                out.put((_ITEM, item))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            out.put((_ERROR, exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:
                    close()
                except BaseException as exc:  # noqa: BLE001 - a failing cleanup is still the consumer's to see
                    out.put((_ERROR, exc))

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            kind, value = out.get()
            if kind == _END:
                return
            if kind == _ERROR:
                raise value
            slots.release()  # the consumer now holds this item: the producer may start the next one
            yield value
    finally:
        stop.set()
        slots.release()  # wake a producer waiting for a slot, so it sees the stop
        thread.join()
