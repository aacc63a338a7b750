"""Pixel decoding in a separate worker process, so that a decoder that aborts or hangs takes only the worker down.

GDCM's Python wrapper lets C++ exceptions reach ``std::terminate`` on some damaged codestreams (JPEG, JPEG 2000,
Rows/Columns that disagree with the data), which would abort the whole process, viewer included. The reader
therefore sends GDCM decodes to one long-lived worker (:class:`DecoderWorker`): if it dies, only that file fails,
and the next decode starts a fresh worker.

The worker is a plain child process (``python -m pneumoview.imaging.isolated``, or in a frozen build the executable
itself with :data:`WORKER_FLAG`) that reads pickled ``(dataset, plugin)`` requests on stdin and writes pickled
replies on stdout. It is deliberately not a ``multiprocessing`` process: "spawn" re-imports the caller's main script
in the child, which re-runs any script that calls ``load_image`` without an ``if __name__ == "__main__"`` guard.
Only this package's own child reads the pickles.
"""

from __future__ import annotations

import atexit
import builtins
import logging
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
import warnings
from typing import IO, Any

from pydicom import uid as dcm_uid
from pydicom.pixels import get_decoder

#: The argument that makes a frozen PneumoView executable run as the decoder worker.
WORKER_FLAG = "--pneumoview-decoder-worker"
_HEADER = struct.Struct("<Q")


class DecoderCrashed(RuntimeError):
    """The worker process died or stopped answering while decoding one file."""


def _write(stream: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read(stream: IO[bytes]) -> Any:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError
    (n,) = _HEADER.unpack(head)
    data = stream.read(n)
    if len(data) < n:
        raise EOFError
    return pickle.loads(data)  # noqa: S301 - the peer is our own child/parent process


def serve(stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None) -> int:
    """The worker's loop: decode frame 1 of each requested data set until stdin closes."""

    warnings.simplefilter("ignore")
    src = stdin or sys.stdin.buffer
    dst = stdout or sys.stdout.buffer
    while True:
        try:
            ds, plugin = _read(src)
        except EOFError:
            return 0
        try:
            ts = dcm_uid.UID(str(ds.file_meta.TransferSyntaxUID))
            arr, props = get_decoder(ts).as_array(ds, index=0, decoding_plugin=plugin)
            reply: tuple[Any, ...] = ("ok", arr, dict(props))
        except Exception as exc:  # sent back and re-raised in the parent
            reply = ("error", type(exc).__name__, str(exc))
        _write(dst, reply)


def _remote_error(name: str, text: str) -> Exception:
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        return cls(text)
    return RuntimeError(f"{name}: {text}")


class DecoderWorker:
    """One decoder worker process, started on first use and restarted after a crash; thread-safe (one decode at a
    time). ``decode`` raises :class:`DecoderCrashed` when the worker dies or exceeds ``timeout_s``."""

    def __init__(self, timeout_s: float = 120.0) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._replies: queue.Queue[Any] = queue.Queue()

    @staticmethod
    def command() -> list[str]:
        if getattr(sys, "frozen", False):
            return [sys.executable, WORKER_FLAG]
        return [sys.executable, "-m", "pneumoview.imaging.isolated"]

    def _start(self) -> subprocess.Popen[bytes]:
        package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # GDCM prints its abort message there
            env=env,
            creationflags=flags,
        )
        self._replies = queue.Queue()
        threading.Thread(target=self._reader, args=(proc, self._replies), daemon=True).start()
        return proc

    @staticmethod
    def _reader(proc: subprocess.Popen[bytes], replies: queue.Queue[Any]) -> None:
        assert proc.stdout is not None
        while True:
            try:
                replies.put(_read(proc.stdout))
            except (EOFError, OSError, pickle.UnpicklingError):
                replies.put(EOFError())
                return

    def warm(self) -> None:
        """Start the process now (its imports take about a second), so that the first decode does not wait."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()

    def decode(self, ds: Any, plugin: str) -> tuple[Any, dict[str, Any]]:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            proc = self._proc
            try:
                assert proc.stdin is not None
                _write(proc.stdin, (ds, plugin))
                reply = self._replies.get(timeout=self.timeout_s)
            except queue.Empty:
                self._stop(proc)
                raise DecoderCrashed(f"the {plugin} decoder stopped responding on this pixel data") from None
            except (BrokenPipeError, OSError):
                reply = EOFError()
            if isinstance(reply, EOFError):
                self._stop(proc)
                raise DecoderCrashed(f"the {plugin} decoder crashed on this pixel data")
        if reply[0] == "ok":
            return reply[1], reply[2]
        raise _remote_error(reply[1], reply[2])

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if self._proc is proc:
            self._proc = None

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                try:
                    assert self._proc.stdin is not None
                    self._proc.stdin.close()  # the worker ends at EOF
                    self._proc.wait(timeout=5)
                except (OSError, subprocess.TimeoutExpired):
                    self._stop(self._proc)
                self._proc = None


_worker: DecoderWorker | None = None
_worker_lock = threading.Lock()
_unavailable = False


def _shared_worker() -> DecoderWorker | None:
    global _worker
    with _worker_lock:
        if _worker is None and not _unavailable:
            _worker = DecoderWorker()
            atexit.register(_worker.close)
        return _worker


def warm_worker_in_background() -> None:
    """Start the shared worker process in a background thread (a no-op when it runs or cannot start)."""

    def start() -> None:
        global _unavailable
        worker = _shared_worker()
        if worker is not None:
            try:
                worker.warm()
            except OSError:
                _unavailable = True

    threading.Thread(target=start, name="decoder-worker-start", daemon=True).start()


def decode_isolated(ds: Any, plugin: str) -> tuple[Any, dict[str, Any]]:
    """Decode frame 1 of ``ds`` with ``plugin`` in the worker process (in this process if no worker can start)."""
    global _unavailable
    worker = _shared_worker()
    if worker is not None:
        try:
            return worker.decode(ds, plugin)
        except FileNotFoundError:
            _unavailable = True
            logging.getLogger(__name__).warning(
                "cannot start a decoder worker process; %s decodes in this process (a damaged file may then "
                "abort it)",
                plugin,
            )

    arr, props = get_decoder(dcm_uid.UID(str(ds.file_meta.TransferSyntaxUID))).as_array(
        ds, index=0, decoding_plugin=plugin
    )
    return arr, dict(props)


if __name__ == "__main__":
    sys.exit(serve())
