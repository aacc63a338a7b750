"""An overlapped three-stage pipeline for batch analysis: read → compute → write, with bounded queues.

``pneumoview predict`` spends its time in three places that need not wait for each other: decoding and
preprocessing the inputs, running the models, and drawing and encoding the annotated PNGs (plus the journal
records). :func:`pipelined` runs the first in a reader thread, the second in the caller's thread (so the models are
only ever used from one thread) and the third in a writer thread. Image decoders, PyTorch and zlib release the GIL
for most of their work, so the stages overlap even in one process.

Memory stays flat: at most ``depth`` prepared inputs wait for the models and at most ``chunk`` computed results
wait for the writer, however many inputs there are. The order of the written outputs is the order of the inputs;
finished-early items (inputs already done or unusable) are yielded as soon as the compute stage reaches them.

Closing the returned generator early (cancel) stops the reader, lets the writer finish the output it is writing
(an output is only ever written whole), drops the results still queued (their inputs have no journal record, so a
re-run does them, as after a cancel of the sequential path) and joins both threads. An exception in any stage is
raised in the caller.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["Finished", "pipelined", "sequential"]

T = TypeVar("T")  # an input
W = TypeVar("W")  # prepared work for the models
R = TypeVar("R")  # a model result
O = TypeVar("O")  # noqa: E741 - an output

_END = object()
_POLL_S = 0.1


@dataclass(frozen=True)
class Finished(Generic[O]):
    """What ``prepare`` returns for an input that needs no model run: ``value`` is yielded as it is."""

    value: O


@dataclass(frozen=True)
class _Failure:
    error: BaseException


def pipelined(
    inputs: Iterable[T],
    prepare: Callable[[T], Finished[O] | W],
    compute: Callable[[Sequence[W]], Sequence[R]],
    write: Callable[[W, R, float], O],
    *,
    chunk: int = 4,
    depth: int = 8,
) -> Generator[O, None, None]:
    """Yield ``prepare``'s :class:`Finished` values and ``write``'s outputs while the three stages overlap.

    ``prepare(input)`` runs in a reader thread, in input order; ``compute(works)`` runs in the calling thread on up
    to ``chunk`` works at a time and returns one result per work; ``write(work, result, compute_s)`` runs in a writer
    thread, in input order, with the work's share of the compute time in seconds.
    """
    if chunk < 1 or depth < 1:
        raise ValueError("chunk and depth must be at least 1")
    run = _Pipeline(prepare, compute, write, chunk, depth)
    run.start(inputs)
    try:
        yield from run.compute_all()
        yield from run.rest_written()
    finally:
        run.close()


class _Pipeline(Generic[T, W, R, O]):
    """The queues and threads of one :func:`pipelined` run."""

    def __init__(
        self,
        prepare: Callable[[T], Finished[O] | W],
        compute: Callable[[Sequence[W]], Sequence[R]],
        write: Callable[[W, R, float], O],
        chunk: int,
        depth: int,
    ) -> None:
        self.prepare, self.compute, self.write, self.chunk = prepare, compute, write, chunk
        self.prepared: queue.Queue[Any] = queue.Queue(maxsize=depth)
        # One chunk ahead of the writer at most: a cancel then throws away little computed work.
        self.to_write: queue.Queue[Any] = queue.Queue(maxsize=chunk)
        self.written: queue.Queue[Any] = queue.Queue()  # bounded in effect by to_write
        self.stop = threading.Event()
        self.reader: threading.Thread | None = None
        self.writer = threading.Thread(target=self._write_all, name="pneumoview-batch-writer", daemon=True)

    def start(self, inputs: Iterable[T]) -> None:
        self.reader = threading.Thread(
            target=self._read, args=(inputs,), name="pneumoview-batch-reader", daemon=True
        )
        self.reader.start()
        self.writer.start()

    def _read(self, inputs: Iterable[T]) -> None:
        try:
            for inp in inputs:
                if self.stop.is_set():
                    return
                if not _put(self.prepared, self.prepare(inp), self.stop):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            _put(self.prepared, _Failure(exc), self.stop)
            return
        _put(self.prepared, _END, self.stop)

    def _write_all(self) -> None:
        while True:
            job = self.to_write.get()
            if job is _END:
                return
            try:
                self.written.put(self.write(*job))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                self.written.put(_Failure(exc))
                self.stop.set()
                _drain(self.to_write)  # so that the caller never blocks on a full queue again
                return

    def _send(self, works: list[Any]) -> None:
        results, share = _timed(self.compute, works)
        if len(results) != len(works):
            raise RuntimeError(f"compute returned {len(results)} results for {len(works)} inputs")
        for work, result in zip(works, results, strict=True):
            while self.writer.is_alive():
                try:
                    self.to_write.put((work, result, share), timeout=_POLL_S)
                    break
                except queue.Full:
                    continue

    def compute_all(self) -> Iterator[O]:
        """Run the models on the prepared works, yielding what is finished (early items, written outputs)."""
        pending: list[Any] = []
        while True:
            item = self.prepared.get()
            yield from _ready(self.written)
            if item is _END:
                break
            if isinstance(item, _Failure):
                raise item.error
            if isinstance(item, Finished):
                yield item.value
                continue
            pending.append(item)
            if len(pending) >= self.chunk:
                works, pending = pending, []
                self._send(works)
        if pending:
            self._send(pending)
        self.to_write.put(_END)

    def rest_written(self) -> Iterator[O]:
        """The outputs the writer finishes after the last compute."""
        while self.writer.is_alive() or not self.written.empty():
            try:
                out = self.written.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if isinstance(out, _Failure):
                raise out.error
            yield out

    def close(self) -> None:
        self.stop.set()
        _drain(self.prepared)  # unblocks a reader waiting on a full queue
        # Cancelled or failed: results not yet being written are dropped, as the sequential path drops the rest of
        # its chunk; their inputs have no journal record, so a re-run does them.
        _drain(self.to_write)
        if self.writer.is_alive():
            self.to_write.put(_END)
        self.writer.join()
        if self.reader is not None:
            self.reader.join()


def sequential(
    inputs: Iterable[T],
    prepare: Callable[[T], Finished[O] | W],
    compute: Callable[[Sequence[W]], Sequence[R]],
    write: Callable[[W, R, float], O],
    *,
    chunk: int = 4,
) -> Generator[O, None, None]:
    """The same stages one after the other in the calling thread (the reference :func:`pipelined` must match)."""
    pending: list[Any] = []

    def run(works: list[Any]) -> Iterator[O]:
        results, share = _timed(compute, works)
        for work, result in zip(works, results, strict=True):
            yield write(work, result, share)

    for inp in inputs:
        item = prepare(inp)
        if isinstance(item, Finished):
            yield item.value
            continue
        pending.append(item)
        if len(pending) >= chunk:
            works, pending = pending, []
            yield from run(works)
    if pending:
        yield from run(pending)


def _timed(compute: Callable[[Sequence[W]], Sequence[R]], works: Sequence[W]) -> tuple[Sequence[R], float]:
    """``compute(works)`` and each work's share of the time it took, in seconds."""
    t0 = time.perf_counter()
    results = compute(works)
    return results, (time.perf_counter() - t0) / len(works)


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put ``item``, giving up (False) once ``stop`` is set."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _drain(q: queue.Queue[Any]) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return


def _ready(written: queue.Queue[Any]) -> Iterator[Any]:
    """The writer's outputs finished so far, without waiting."""
    while True:
        try:
            out = written.get_nowait()
        except queue.Empty:
            return
        if isinstance(out, _Failure):
            raise out.error
        yield out
