"""Stopping dbt from outside: a run's timeout, SIGINT or SIGTERM stops dbt the way Ctrl-C does.

Contract
- `Stopper.call(invoke)` runs a dbt invocation on the current thread; `Stopper.stop(reason)`
  (from any thread, once) raises KeyboardInterrupt in that thread and cancels the in-flight
  warehouse queries through the adapter (`cancel_open_connections`; dbt-duckdb interrupts the
  DuckDB query). dbt's own KeyboardInterrupt path then writes run_results for the nodes done,
  drains its thread pool (no further node starts), joins its workers and closes its
  connections. `Stopper.interrupted()` says which nodes were running and which of the nodes
  dbt had selected never started (names, and their unique ids for the record `dbt retry` reads).
- `on_signals()` (a context manager, main thread only) turns SIGINT and SIGTERM into a request
  to stop: the handler only records the signal and sets an event (`Signals.event`); the flow's
  main thread sees it and calls `Stopper.stop`. Outside the block the earlier handlers
  (Prefect's SIGTERM bridge, Python's KeyboardInterrupt) are back.

Pitfalls
- The stop is an asynchronous exception (`PyThreadState_SetAsyncExc`): Python delivers it when
  the thread next runs bytecode, so a dbt thread blocked waiting for a node wakes when that
  node ends, which the query cancel makes happen at once; a node busy outside the warehouse
  (a Python model, a sleep) ends first. It is raised at most once per Stopper and only while
  `Stopper.call` runs dbt; a stop that lands just outside dbt's own handler is caught there.
- The nodes that never started come from dbt's task (its `_flattened_nodes`), found on the
  KeyboardInterrupt's traceback; when the stop lands before dbt selected nodes (during parse)
  they are unknown and the outcome says so.
- A signal handler runs on the main thread between two bytecodes, possibly while that thread
  holds a lock (the Stopper's, logging's): so it takes none, logs nothing and stops nothing
  itself. A second signal while dbt stops is counted, not acted on (dbt already stops; a
  SIGKILL ends the process at once). Off the main thread (`signal.signal` refuses there) no
  handler is installed and Prefect's own handling applies.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dbtflow.run._warehouse import cancel_queries

T = TypeVar("T")
EventListener = Callable[[Any], None]


@dataclass(frozen=True)
class Interrupted:
    """A step stopped from outside: why, the nodes running then, the selected nodes that never started."""

    reason: str
    running: tuple[str, ...] = ()  # "<resource_type> <name>"
    not_started: tuple[str, ...] | None = None  # None: dbt had not selected its nodes yet
    not_started_ids: tuple[str, ...] = ()  # their unique ids


class Stopper:
    """Stops the dbt invocation of a run from another thread, the way Ctrl-C stops dbt."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: int | None = None
        self.reason: str | None = None
        self._names: dict[str, str] = {}
        self._started: set[str] = set()
        self._finished: set[str] = set()
        self._running_at_stop: set[str] = set()
        self._selected: dict[str, str] | None = None

    @property
    def stopped(self) -> bool:
        return self.reason is not None

    def begin_step(self) -> None:
        with self._lock:
            self._started.clear()
            self._finished.clear()
            self._running_at_stop.clear()
            self._selected = None

    def on_event(self, event: Any) -> None:
        """A dbt event callback (dbt's threads): records node starts and ends, nothing else."""
        name = event.info.name
        if name != "NodeStart" and name != "NodeFinished":
            return
        info = event.data.node_info
        with self._lock:
            self._names[info.unique_id] = f"{info.resource_type} {info.node_name}"
            if name == "NodeStart":
                self._started.add(info.unique_id)
                if self.reason is not None:  # started in the moment between the stop and dbt seeing it
                    self._running_at_stop.add(info.unique_id)
            else:
                self._finished.add(info.unique_id)

    def quiet(self, callback: EventListener) -> EventListener:
        """`callback` without dbt's traceback of the KeyboardInterrupt once stopped (a stop is no crash)."""

        def listener(event: Any) -> None:
            if self.reason is None or event.info.name not in ("MainEncounteredError", "MainStackTrace"):
                callback(event)

        return listener

    def call(self, invoke: Callable[[], T]) -> T | None:
        """`invoke()` (a dbt invocation) on this thread, stoppable; None when stopped before it ran."""
        with self._lock:
            if self.reason is not None:
                return None
            self._thread = threading.get_ident()
        try:
            result = invoke()
        except KeyboardInterrupt:
            if self.reason is None:
                raise  # a real Ctrl-C
            return None
        finally:
            with self._lock:
                self._thread = None
                if self.reason is not None:
                    _async_raise(threading.get_ident(), None)  # drop the stop if it is still pending
        self._find_selected(getattr(result, "exception", None))
        return result

    def stop(self, reason: str) -> None:
        """Stop now (any thread, once): KeyboardInterrupt in dbt's thread, then cancel the warehouse queries."""
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
            self._running_at_stop = self._started - self._finished
            if self._thread is not None:
                _async_raise(self._thread, KeyboardInterrupt)
        cancel_queries()

    def stopped_while_running(self, unique_id: str) -> str | None:
        """The stop's reason when the node was running at the stop (its failure is the stop's), else None."""
        with self._lock:
            return self.reason if unique_id in self._running_at_stop else None

    def interrupted(self) -> Interrupted | None:
        if self.reason is None:
            return None
        with self._lock:
            running = tuple(sorted(self._names.get(u, u) for u in self._running_at_stop))
            selected = self._selected
            never = {} if selected is None else {u: n for u, n in selected.items() if u not in self._started}
        not_started = None if selected is None else tuple(sorted(never.values()))
        return Interrupted(self.reason, running, not_started, tuple(sorted(never)))

    def _find_selected(self, exc: BaseException | None) -> None:
        """The nodes dbt selected, from its task on the KeyboardInterrupt's traceback."""
        if not isinstance(exc, KeyboardInterrupt):
            return
        tb = exc.__traceback__
        while tb is not None:
            task = tb.tb_frame.f_locals.get("self")
            nodes = getattr(task, "_flattened_nodes", None)
            if nodes is not None:
                with contextlib.suppress(Exception), self._lock:
                    self._selected = {
                        n.unique_id: f"{n.resource_type} {n.name}"
                        for n in nodes
                        if not getattr(n, "is_ephemeral_model", False)
                    }
                return
            tb = tb.tb_next


@dataclass
class Signals:
    """The stop signals received while `on_signals` is open: the first one's name, and how many."""

    event: threading.Event = field(default_factory=threading.Event)
    name: str | None = None
    count: int = 0


@contextlib.contextmanager
def on_signals() -> Iterator[Signals]:
    """SIGINT and SIGTERM only record themselves while open (the caller stops dbt); earlier handlers after."""
    received = Signals()

    def handler(signum: int, _frame: Any) -> None:
        received.count += 1
        if received.name is None:
            received.name = signal.Signals(signum).name
        received.event.set()

    previous: dict[int, Any] = {}
    try:
        for stop_signal in (signal.SIGINT, signal.SIGTERM):
            previous[stop_signal] = signal.signal(stop_signal, handler)
    except ValueError:  # not the main thread: Prefect's own handling applies
        pass
    try:
        yield received
    finally:
        for number, earlier in previous.items():
            signal.signal(number, earlier)


def _async_raise(thread_id: int, exc: type[BaseException] | None) -> None:
    """Raise `exc` in another thread at its next bytecode (None: drop a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)
