"""The device side of the emulation: the current device per thread, streams, events, the
host-synchronisation counter and the memory pools (``cupy.cuda`` and ``cupy.cuda.runtime``).

Work runs eagerly on the host, so every stream is always idle; streams keep a short log of
what was queued on them and events record the position they were recorded at, so a test
can check the order in which work was queued.
"""
import collections
import itertools
import os
import sys
import threading
import weakref

N_DEVICES = [1]  # set by install()
_local = threading.local()
_ptrs = itertools.count(0x7F0000001000, 0x100)  # stream / event handles (0 is the null stream)


class CUDARuntimeError(RuntimeError):
    """``cupy_backends.cuda.api.runtime.CUDARuntimeError``: "cudaErrorX: message"."""

    def __init__(self, name, message):
        super().__init__(f"{name}: {message}")


def _check_index(device_id):
    if not 0 <= device_id < N_DEVICES[0]:
        raise CUDARuntimeError("cudaErrorInvalidDevice", "invalid device ordinal")


def current_id():
    return getattr(_local, "device", 0)


# ---- host synchronisations --------------------------------------------------------------
class SyncCounter:
    """Counts host synchronisations (``get``/``asnumpy``/``item``/``float``/``bool``/``tolist``,
    boolean-mask reads, ``nonzero``, ``synchronize``...); each entry names the kind and the
    first caller outside the emulation."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events = []

    def record(self, kind):
        frame = sys._getframe(1)
        here = __file__.rsplit("/", 1)[0]
        while frame is not None and frame.f_code.co_filename.startswith(here):
            frame = frame.f_back
        where = f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "?"
        with self.lock:
            self.events.append((kind, where))

    @property
    def count(self):
        return len(self.events)

    def reset(self):
        with self.lock:
            self.events.clear()


SYNCS = SyncCounter()


# ---- devices ----------------------------------------------------------------------------
class Device:
    """``cupy.cuda.Device(device=None)``: the current device when None; a context manager
    that makes it current for this thread (and restores the previous one on exit)."""

    def __init__(self, device=None):
        if device is None:
            device = current_id()
        elif isinstance(device, Device):
            device = device.id
        self.id = int(device)
        self._saved = []

    def use(self):
        _check_index(self.id)
        _local.device = self.id

    def __enter__(self):
        _check_index(self.id)
        self._saved.append(current_id())
        _local.device = self.id
        return self

    def __exit__(self, *exc):
        _local.device = self._saved.pop()

    def synchronize(self):
        _check_index(self.id)
        SYNCS.record("Device.synchronize")
        for stream in list(_by_ptr.values()) + list(_null_streams.values()):
            if stream.device_id == self.id:
                stream.host_synced = stream.launches

    @property
    def compute_capability(self):
        return "90"

    @property
    def mem_info(self):
        total = 80 * 2**30
        return total - POOL.used[self.id], total

    def __int__(self):
        return self.id

    def __index__(self):
        return self.id

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash(("cuda", self.id))

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


# ---- streams and events -----------------------------------------------------------------
class Stream:
    """``cupy.cuda.Stream(null=False, non_blocking=False, ptds=False, priority=None)``, bound
    to the device current at its creation; ``with stream:`` makes it this thread's current
    stream on that device."""

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        self.device_id = current_id()
        self.ptr = 0 if null else next(_ptrs)
        self.non_blocking, self.priority = non_blocking, priority
        if self.ptr:
            _by_ptr[self.ptr] = self
        self.log = collections.deque(maxlen=10000)  # ("launch", name) / ("record", event) / ("wait", event)
        self.launches = 0
        self.host_synced = 0  # launches the host has waited for (synchronize, get)
        self.waited = {}  # stream -> its launches this stream waits for (events, implicit null-stream sync)
        self._saved = []

    def _enter_check(self):
        if self.device_id != current_id():
            raise RuntimeError(f"The device that the stream is created on ({self.device_id}) does not match "
                               f"with the current device ({current_id()})")

    def use(self):
        self._enter_check()
        _streams()[self.device_id] = self
        return self

    def __enter__(self):
        self._enter_check()
        table = _streams()
        self._saved.append(table.get(self.device_id))
        table[self.device_id] = self
        return self

    def __exit__(self, *exc):
        previous = self._saved.pop()
        table = _streams()
        if previous is None:
            table.pop(self.device_id, None)
        else:
            table[self.device_id] = previous

    def launch(self, name):
        if self.ptr == 0:  # the legacy null stream waits for every blocking stream of its device
            for other in list(_by_ptr.values()):
                if other.device_id == self.device_id and not other.non_blocking:
                    self.waited[other] = other.launches
        elif not self.non_blocking:  # and a blocking stream waits for the null stream
            null = _null(self.device_id)
            self.waited[null] = null.launches
        self.launches += 1
        self.log.append(("launch", name))

    def record(self, event=None):
        event = Event() if event is None else event
        event.record(self)
        return event

    def wait_event(self, event):
        self.log.append(("wait", event))
        event.waited_by.append((self, self.launches))
        if event.stream is not None and event.stream is not self:
            for stream, position in [*event.waited.items(), (event.stream, event.position)]:
                self.waited[stream] = max(self.waited.get(stream, 0), position)

    def synchronize(self):
        SYNCS.record("Stream.synchronize")
        self.host_synced = self.launches

    @property
    def done(self):
        return True

    def __eq__(self, other):
        return isinstance(other, Stream) and (other.ptr, other.device_id) == (self.ptr, self.device_id)

    def __hash__(self):
        return hash((self.ptr, self.device_id))

    def __repr__(self):
        return f"<Stream {self.ptr} (device {self.device_id})>"


_null_streams = {}
_by_ptr = weakref.WeakValueDictionary()


def stream_by_ptr(ptr, device_id):
    """The stream with handle ``ptr`` if it belongs to ``device_id`` (0: that device's null stream)."""
    if ptr == 0:
        return get_current_stream(device_id) if get_current_stream(device_id).ptr == 0 else _null(device_id)
    stream = _by_ptr.get(ptr)
    return stream if stream is not None and stream.device_id == device_id else None


def _null(device_id):
    stream = _null_streams.get(device_id)
    if stream is None:
        with Device(device_id):
            stream = _null_streams[device_id] = Stream(null=True)
    return stream


def _streams():
    table = getattr(_local, "streams", None)
    if table is None:
        table = _local.streams = {}
    return table


def get_current_stream(device_id=-1):
    """``cupy.cuda.get_current_stream(int device_id=-1)``: this thread's current stream."""
    device_id = current_id() if device_id < 0 else device_id
    stream = _streams().get(device_id)
    return _null(device_id) if stream is None else stream


class Event:
    """``cupy.cuda.Event(block=False, disable_timing=False, interprocess=False)``."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.block, self.disable_timing, self.interprocess = block, disable_timing, interprocess
        self.ptr = next(_ptrs)
        self.device_id = current_id()
        self.stream = None  # where it was last recorded, and after how many launches there
        self.position = None
        self.waited_by = []
        self.waited = {}

    def record(self, stream=None):
        stream = get_current_stream() if stream is None else stream
        if stream.device_id != self.device_id:
            raise CUDARuntimeError("cudaErrorInvalidResourceHandle", "invalid resource handle")
        self.stream, self.position = stream, stream.launches
        self.waited = dict(stream.waited)  # what the stream had waited for, passed on to whoever waits on this
        stream.log.append(("record", self))

    def synchronize(self):
        SYNCS.record("Event.synchronize")
        if self.stream is not None:
            self.stream.host_synced = max(self.stream.host_synced, self.position)

    @property
    def done(self):
        return True


def get_elapsed_time(start_event, end_event):
    if start_event.disable_timing or end_event.disable_timing:
        raise CUDARuntimeError("cudaErrorInvalidResourceHandle", "invalid resource handle")
    return 0.0


# ---- stream order ------------------------------------------------------------------------
class StreamOrderError(RuntimeError):
    """Work on one stream touched memory that another stream wrote, with no event wait or
    host synchronisation ordering them: on a GPU it would read or overwrite unfinished data."""


_writes = {}  # id(root buffer) -> (stream, launch number) of its last write
CHECK_ORDER = [os.environ.get("DTRAIN_EMULATION_STREAM_CHECK", "1") != "0"]


def access(root, stream, what, write=False):
    """``stream`` reads (or writes) the buffer ``root``: raise StreamOrderError if its last
    write, on another stream, is not ordered before this access."""
    last = _writes.get(id(root))
    if last is not None and CHECK_ORDER[0]:
        writer, position = last
        if writer is not stream and writer.device_id == stream.device_id and \
                stream.waited.get(writer, 0) < position and writer.host_synced < position:
            raise StreamOrderError(
                f"{what} on {stream} {'writes' if write else 'reads'} memory that {writer} wrote (its launch "
                f"#{position}) with no event wait or synchronize in between: on a GPU it would see unfinished data")
    if write:
        _writes[id(root)] = (stream, stream.launches)


# ---- memory pools -----------------------------------------------------------------------
class MemoryPool:
    """``cupy.get_default_memory_pool()``: bytes in use and cached per device; queries answer
    for the current device. A freed block stays cached until ``free_all_blocks()``."""

    def __init__(self):
        self.lock = threading.Lock()
        self.used, self.cached, self.limit = collections.Counter(), collections.Counter(), {}

    def allocate(self, array, device_id):
        n = array.nbytes
        if not n:
            return
        with self.lock:
            self.used[device_id] += n
            self.cached[device_id] = max(0, self.cached[device_id] - n)
        weakref.finalize(array, self._free, device_id, n, id(array))

    def _free(self, device_id, n, key=None):
        _writes.pop(key, None)
        with self.lock:
            self.used[device_id] -= n
            self.cached[device_id] += n

    def used_bytes(self):
        return self.used[current_id()]

    def free_bytes(self):
        return self.cached[current_id()]

    def total_bytes(self):
        return self.used_bytes() + self.free_bytes()

    def n_free_blocks(self):
        return 1 if self.free_bytes() else 0

    def free_all_blocks(self, stream=None):
        with self.lock:
            self.cached[current_id()] = 0

    def free_all_free(self):
        self.free_all_blocks()

    def set_limit(self, size=None, fraction=None):
        self.limit[current_id()] = size

    def get_limit(self):
        return self.limit.get(current_id()) or 0


class PinnedMemoryPool:
    def free_all_blocks(self):
        pass

    def n_free_blocks(self):
        return 0


POOL, PINNED_POOL = MemoryPool(), PinnedMemoryPool()


def get_default_memory_pool():
    return POOL


def get_default_pinned_memory_pool():
    return PINNED_POOL


# ---- cupy.cuda.runtime --------------------------------------------------------------------
def getDeviceCount():
    return N_DEVICES[0]


def getDevice():
    return current_id()


def setDevice(device):
    Device(device).use()


def deviceSynchronize():
    SYNCS.record("deviceSynchronize")


def getDeviceProperties(device):
    _check_index(device)
    return {"name": f"Emulated GPU {device} (NumPy)".encode(), "totalGlobalMem": 80 * 2**30, "major": 9,
            "minor": 0, "multiProcessorCount": 132, "pciBusID": device, "pciDeviceID": 0, "pciDomainID": 0,
            "uuid": bytes(16), "warpSize": 32, "maxThreadsPerBlock": 1024}


def memGetInfo():
    return Device().mem_info


def runtimeGetVersion():
    return 12080


def driverGetVersion():
    return 12080


def is_available():
    return N_DEVICES[0] > 0
