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
import typing as tp
from pathlib import Path

from plexray.serve.engine.adapter_files import (ADAPTER_CONFIG, ADAPTER_WEIGHTS, AdapterFileError, HostAdapter,
                                                read_adapter)
from plexray.serve.engine.batched_lora import AdapterTables
from plexray.serve.engine.config import AdapterServingConfig
from plexray.serve.engine.errors import SessionSettingsError

ADAPTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class UnknownAdapterError(SessionSettingsError):
    """A session named an adapter the registry does not hold (or a name that cannot be one)."""


class AdapterKey(tp.NamedTuple):
    """One version of an adapter: its name and its files' modification times and sizes. An adapter
    rewritten under the same name is a new key: new sessions get the new weights, sessions already on the
    old ones keep them, and the old version ages out of host memory and the device rows."""

    name: str
    stamp: tuple[int, ...]


class AdapterRegistry:
    """Adapters by name: `<root>/<name>/` holds peft's adapter files. Looked up at every request, so an
    adapter written there by a training job is servable at once, without redeploying anything."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def locate(self, name: str) -> tuple[Path, AdapterKey]:
        if not ADAPTER_NAME.fullmatch(name):
            raise UnknownAdapterError(f"adapter name {name!r}: expected letters, digits, '.', '_' or '-' "
                                      f"(at most 128, not starting with '.', '_' or '-')")
        directory = self.root / name
        if not (directory / ADAPTER_CONFIG).is_file():
            raise UnknownAdapterError(f"unknown adapter {name!r}: the registry {self.root} holds no such adapter")
        stamp = []
        for file in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
            try:
                stat = (directory / file).stat()
                stamp += [stat.st_mtime_ns, stat.st_size]
            except OSError:  # no weights: the read says so, with its reason
                stamp += [0, 0]
        return directory, AdapterKey(name, tuple(stamp))


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
        # All by AdapterKey (an adapter's name and version):
        self._users: collections.Counter[AdapterKey] = collections.Counter()  # sessions waiting for or seated on it
        self._host: collections.OrderedDict[AdapterKey, HostAdapter] = collections.OrderedDict()  # least recent first
        self._loading: dict[AdapterKey, concurrent.futures.Future] = {}
        self._failed: dict[AdapterKey, str] = {}  # why its last read failed (cleared by the next request)
        self._rows: collections.OrderedDict[AdapterKey, int] = collections.OrderedDict()  # least recent first
        self._row_users: collections.Counter[AdapterKey] = collections.Counter()  # seated sessions per adapter
        self._free_rows = list(range(tables.rows - 1, 0, -1))  # row 0 is "no adapter"
        self._loader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="plexray-adapter-loader")
        self.counters = AdapterCounters()

    def close(self) -> None:
        self._loader.shutdown(wait=True, cancel_futures=True)

    # ----- any thread ------------------------------------------------------------------------
    def want(self, name: str) -> AdapterKey:
        """A session needs adapter `name` (until `unwant` of the key returned): as `prepare`, and its
        current version is kept in host memory meanwhile."""
        return self._request(name, wanted=True)[0]

    def prepare(self, name: str) -> concurrent.futures.Future:
        """UnknownAdapterError at once if the registry has no adapter `name`; else its current version is
        read in the background if it is not in host memory. The future completes when it is there (or
        raises AdapterFileError: corrupt, truncated, made for another base)."""
        return self._request(name, wanted=False)[1]

    def _request(self, name: str, wanted: bool) -> tuple[AdapterKey, concurrent.futures.Future]:
        directory, key = self.registry.locate(name)
        with self._lock:
            if wanted:
                self._users[key] += 1
            self._failed.pop(key, None)  # a new request tries again (the file may have been fixed)
            if key in self._host:
                self._host.move_to_end(key)
                done = concurrent.futures.Future()
                done.set_result(self._host[key])
                return key, done
            if key not in self._loading:
                self._loading[key] = self._loader.submit(self._read, key, directory)
            return key, self._loading[key]

    def unwant(self, name: AdapterKey) -> None:
        with self._lock:
            self._users[name] -= 1
            if self._users[name] <= 0:
                del self._users[name]

    def failure(self, name: AdapterKey) -> str | None:
        """Why the adapter could not be read (None: it is being read or was read)."""
        with self._lock:
            return self._failed.get(name)

    def can_seat(self, name: AdapterKey) -> bool:
        """Whether acquire_row(name) would give a row now (read, and a row holds it or can be had)."""
        with self._lock:
            if name in self._rows:
                return True
            return name in self._host and (bool(self._free_rows) or any(n not in self._row_users for n in self._rows))

    def snapshot(self) -> dict:
        with self._lock:
            counters = self.counters
            in_use = collections.Counter()
            for key, count in self._row_users.items():
                in_use[key.name] += count
            return {
                "on_device": [key.name for key in self._rows], "in_host": [key.name for key in self._host],
                "loading": sorted(key.name for key in self._loading),
                "in_use": dict(in_use),  # seated sessions per adapter name (all its versions)
                "max_on_device": self._tables.rows - 1,
                "max_in_host": self.config.max_in_host,
                "device_hits": counters.device_hits, "device_loads": counters.device_loads,
                "host_loads": counters.host_loads, "load_failures": counters.load_failures,
                "device_evictions": counters.device_evictions, "host_evictions": counters.host_evictions,
                "host_load_ms_p50": _median(counters.host_load_ms),
                "device_load_ms_p50": _median(counters.device_load_ms),
                "host_bytes": sum(adapter.nbytes for adapter in self._host.values()),
            }

    # ----- tick thread -----------------------------------------------------------------------
    def acquire_row(self, name: AdapterKey) -> int | None:
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

    def release_row(self, name: AdapterKey) -> None:
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
    def _read(self, name: AdapterKey, directory: Path) -> HostAdapter:
        started = time.perf_counter()
        try:
            adapter = read_adapter(name.name, directory, self._tables.shapes(), self._tables.max_rank, self._dtype)
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
