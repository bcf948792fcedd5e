"""Where each LoRA adapter is: in the registry, in host memory, in a device row of the engine's tables.

    registry directory  --(loader thread: read + check)-->  host memory (LRU, max_in_host)
                        --(tick thread: copy into a row)-->  device tables (LRU, max_on_device rows)

Reading an adapter (file I/O, checks) happens on a loader thread, never on the engine's tick or the
caller's event loop; only the copy into a device row happens on the tick thread (device work from a
second thread could break a CUDA-graph capture in progress). A session whose adapter is still being
read waits in the line while the others are seated and keep talking.

Eviction: least recently used first, and never an adapter a seated session uses (device) or a
waiting or seated session needs (host). When every row is in use, a session for another adapter
waits for a row to free up.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import re
import statistics
import threading
import time
from pathlib import Path

from plexray.serve.engine.adapter_files import ADAPTER_CONFIG, AdapterFileError, HostAdapter, read_adapter
from plexray.serve.engine.batched_lora import AdapterTables
from plexray.serve.engine.config import AdapterServingConfig
from plexray.serve.engine.errors import SessionSettingsError

ADAPTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class UnknownAdapterError(SessionSettingsError):
    """A session named an adapter the registry does not hold (or a name that cannot be one)."""


class AdapterRegistry:
    """Adapters by name: `<root>/<name>/` holds peft's adapter files. Looked up at every request, so an
    adapter written there by a training job is servable at once, without redeploying anything."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def locate(self, name: str) -> Path:
        if not ADAPTER_NAME.fullmatch(name):
            raise UnknownAdapterError(f"adapter name {name!r}: expected letters, digits, '.', '_' or '-' "
                                      f"(at most 128, not starting with '.', '_' or '-')")
        directory = self.root / name
        if not (directory / ADAPTER_CONFIG).is_file():
            raise UnknownAdapterError(f"unknown adapter {name!r}: the registry {self.root} holds no such adapter")
        return directory


@dataclasses.dataclass
class AdapterCounters:
    device_hits: int = 0  # a session seated on an adapter already in a device row
    device_loads: int = 0  # copies of an adapter into a device row
    host_loads: int = 0  # adapters read from the registry
    load_failures: int = 0
    device_evictions: int = 0
    host_evictions: int = 0
    host_load_ms: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=100))
    device_load_ms: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=100))


class AdapterPool:
    """The adapters of one engine. `want`/`unwant` from any thread; `acquire_row`/`release_row` from the tick thread."""

    def __init__(self, config: AdapterServingConfig, tables: AdapterTables, dtype):
        self.config = config
        self.registry = AdapterRegistry(config.registry)
        self._tables = tables
        self._dtype = dtype
        self._lock = threading.Lock()  # guards everything below; never held during file reads or device copies
        self._users: collections.Counter[str] = collections.Counter()  # sessions waiting for or seated on it
        self._host: collections.OrderedDict[str, HostAdapter] = collections.OrderedDict()  # least recent first
        self._loading: dict[str, concurrent.futures.Future] = {}
        self._failed: dict[str, str] = {}  # name -> why its last read failed (cleared by the next request)
        self._rows: collections.OrderedDict[str, int] = collections.OrderedDict()  # on the device, least recent first
        self._row_users: collections.Counter[str] = collections.Counter()  # seated sessions per adapter
        self._free_rows = list(range(tables.rows - 1, 0, -1))  # row 0 is "no adapter"
        self._loader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="plexray-adapter-loader")
        self.counters = AdapterCounters()

    def close(self) -> None:
        self._loader.shutdown(wait=True, cancel_futures=True)

    # ----- any thread ------------------------------------------------------------------------
    def want(self, name: str) -> concurrent.futures.Future:
        """A session needs `name` (until `unwant`): as `prepare`, and kept in host memory meanwhile."""
        return self.prepare(name, wanted=True)

    def prepare(self, name: str, wanted: bool = False) -> concurrent.futures.Future:
        """UnknownAdapterError at once if the registry has no adapter `name`; else it is read in the
        background if it is not in host memory. The future completes when it is there (or raises
        AdapterFileError: corrupt, truncated, made for another base)."""
        directory = self.registry.locate(name)
        with self._lock:
            if wanted:
                self._users[name] += 1
            self._failed.pop(name, None)  # a new request tries again (the file may have been fixed)
            if name in self._host:
                self._host.move_to_end(name)
                done = concurrent.futures.Future()
                done.set_result(self._host[name])
                return done
            if name not in self._loading:
                self._loading[name] = self._loader.submit(self._read, name, directory)
            return self._loading[name]

    def unwant(self, name: str) -> None:
        with self._lock:
            self._users[name] -= 1
            if self._users[name] <= 0:
                del self._users[name]

    def failure(self, name: str) -> str | None:
        """Why the adapter could not be read (None: it is being read or was read)."""
        with self._lock:
            return self._failed.get(name)

    def can_seat(self, name: str) -> bool:
        """Whether acquire_row(name) would give a row now (read, and a row holds it or can be had)."""
        with self._lock:
            if name in self._rows:
                return True
            return name in self._host and (bool(self._free_rows) or any(n not in self._row_users for n in self._rows))

    def snapshot(self) -> dict:
        with self._lock:
            counters = self.counters
            return {
                "on_device": list(self._rows), "in_host": list(self._host), "loading": sorted(self._loading),
                "in_use": dict(self._row_users), "max_on_device": self._tables.rows - 1,
                "max_in_host": self.config.max_in_host,
                "device_hits": counters.device_hits, "device_loads": counters.device_loads,
                "host_loads": counters.host_loads, "load_failures": counters.load_failures,
                "device_evictions": counters.device_evictions, "host_evictions": counters.host_evictions,
                "host_load_ms_p50": _median(counters.host_load_ms), "device_load_ms_p50": _median(counters.device_load_ms),
                "host_bytes": sum(adapter.nbytes for adapter in self._host.values()),
            }

    # ----- tick thread -----------------------------------------------------------------------
    def acquire_row(self, name: str) -> int | None:
        """The device row holding `name` for one more seated session, copied in if need be; None while
        it is still being read, or every row is in use by other adapters (the session waits)."""
        with self._lock:
            if name in self._rows:
                self._rows.move_to_end(name)
                self._row_users[name] += 1
                self.counters.device_hits += 1
                return self._rows[name]
            adapter = self._host.get(name)
            if adapter is None:
                return None
            row = self._free_row()
            if row is None:
                return None
            self._rows[name] = row
            self._row_users[name] += 1
        started = time.perf_counter()
        self._tables.write(row, adapter.updates)  # outside the lock: a want() never waits for device work
        with self._lock:
            self.counters.device_loads += 1
            self.counters.device_load_ms.append((time.perf_counter() - started) * 1000)
        return row

    def release_row(self, name: str) -> None:
        """A seated session on `name` ended; its row stays loaded (least recently used goes first)."""
        with self._lock:
            self._row_users[name] -= 1
            if self._row_users[name] <= 0:
                del self._row_users[name]

    def _free_row(self) -> int | None:
        """(the caller holds self._lock)"""
        if self._free_rows:
            return self._free_rows.pop()
        idle = next((name for name in self._rows if name not in self._row_users), None)
        if idle is None:
            return None
        self.counters.device_evictions += 1
        return self._rows.pop(idle)

    # ----- loader thread ---------------------------------------------------------------------
    def _read(self, name: str, directory: Path) -> HostAdapter:
        started = time.perf_counter()
        try:
            adapter = read_adapter(name, directory, self._tables.shapes(), self._tables.max_rank, self._dtype)
        except Exception as exc:  # AdapterFileError, or whatever else reading it raised: the sessions must hear
            with self._lock:
                del self._loading[name]
                self._failed[name] = str(exc) if isinstance(exc, AdapterFileError) else f"{directory}: {exc!r}"
                self.counters.load_failures += 1
            raise
        with self._lock:
            del self._loading[name]
            self._host[name] = adapter
            self._evict_host()
            self.counters.host_loads += 1
            self.counters.host_load_ms.append((time.perf_counter() - started) * 1000)
        return adapter

    def _evict_host(self) -> None:
        """(the caller holds self._lock) Least recently used out, but never one a session needs."""
        while len(self._host) > self.config.max_in_host:
            idle = next((name for name in self._host if name not in self._users), None)
            if idle is None:
                return  # every one is needed: over the limit until sessions end
            del self._host[idle]
            self.counters.host_evictions += 1


def _median(values) -> float | None:
    return round(statistics.median(values), 3) if values else None
