"""DataParallel: one process drives several devices, as ``torch.nn.DataParallel``.

Each forward scatters the batch over the devices, replicates the module onto them, runs
the replicas in parallel threads and gathers their outputs on one device. The replicas'
parameters are differentiable copies of the originals, so one ``backward()`` on the
gathered output accumulates every replica's gradient into the original ``.grad``.
The pieces are also functions of their own: ``scatter``, ``replicate``,
``parallel_apply``, ``gather``.
"""
import itertools
import numbers
import threading
import traceback
import warnings

from ..nn.module import Module  # not ..nn: dtrain.nn re-exports DataParallel
from ..tensor import Tensor, backend, cat, chunk, clone
from ..tensor.grad_mode import is_grad_enabled, set_grad_enabled
from ..tensor.ops import autocast


def _device(spec, what):
    """A Device from a device_ids entry or output_device: an int is a CUDA index, as in PyTorch."""
    if isinstance(spec, numbers.Integral) and not isinstance(spec, bool) and spec >= 0:
        spec = backend.Device("cuda", int(spec))
    try:
        return backend.resolve(backend.Device(spec))  # "cuda": the current device, as PyTorch
    except (TypeError, ValueError) as e:
        raise ValueError(f"DataParallel: {what} {spec!r} is not a device: {e}") from None


def _is_namedtuple(obj):
    return isinstance(obj, tuple) and hasattr(obj, "_fields")


def _first_tensor(obj):
    if isinstance(obj, Tensor):
        return obj
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
    return next((t for t in map(_first_tensor, items) if t is not None), None)


def scatter(inputs, target_devices, dim=0):
    """Split ``inputs`` into one piece per device, as ``torch.nn.parallel.scatter``.

    Tensors are cut into ``chunk(len(target_devices), dim)`` (so fewer pieces than devices
    when the batch is smaller) and copied to the devices, differentiably; tuples, lists,
    namedtuples and dicts are split element by element; anything else is passed whole to
    every device. Where parts split into different numbers of pieces, the fewest wins.

    Args:
        inputs: a Tensor or a (nested) tuple/list/dict holding Tensors.
        target_devices: devices ("cpu", "cuda:1", a Device, or a CUDA index).
        dim: the dimension to split along.

    Returns:
        A list with one piece per used device.

    Example:
        >>> [t.shape[0] for t in scatter(dtrain.zeros(5, 2), ["cpu", "cpu"])]
        [3, 2]
    """
    devices = [_device(d, "target device") for d in target_devices]

    def scatter_map(obj):
        if isinstance(obj, Tensor):
            if not -obj.ndim <= dim < obj.ndim:
                raise ValueError(f"DataParallel: cannot scatter an input of shape {list(obj.shape)} along dim "
                                 f"{dim}: every tensor input must have that dimension (pass dim= to DataParallel)")
            return [piece.to(d) for piece, d in zip(chunk(obj, len(devices), dim), devices)]
        if isinstance(obj, (tuple, list, dict)) and len(obj) > 0:
            if isinstance(obj, dict):
                return [type(obj)(items) for items in zip(*map(scatter_map, obj.items()))]
            parts = zip(*map(scatter_map, obj))
            if _is_namedtuple(obj):
                return [type(obj)(*p) for p in parts]
            return [type(obj)(p) for p in parts]
        return [obj for _ in devices]

    return scatter_map(inputs)


def scatter_kwargs(inputs, kwargs, target_devices, dim=0):
    """Scatter positional and keyword inputs together; returns ``(inputs_per_device,
    kwargs_per_device)``, two tuples of the same length."""
    pieces = scatter((tuple(inputs), dict(kwargs or {})), target_devices, dim)
    return tuple(args for args, _ in pieces), tuple(kw for _, kw in pieces)


def replicate(network, devices):
    """Copies of ``network``, one per device, as ``torch.nn.parallel.replicate``.

    The copy on ``devices[0]`` holds the original parameters and buffers wherever they
    already live there (so its in-place buffer updates, e.g. BatchNorm's running stats,
    reach the original module); every other copy holds ``param.to(device)`` or a clone,
    differentiable, so gradients flow back to the original parameters, and copies of the
    buffers. Submodules shared within ``network`` stay shared within each replica.

    Args:
        network: a Module.
        devices: the devices to copy to.

    Returns:
        A list of Modules, one per device.
    """
    devices = [_device(d, "device") for d in devices]
    modules = list(network.modules())
    tensors = list(itertools.chain(network.parameters(), network.buffers()))
    replicas = []
    for j, device in enumerate(devices):
        copies = {id(t): _replica_tensor(t, device, share=j == 0) for t in tensors}
        copies.update((id(m), _shallow_copy(m)) for m in modules)
        for m in modules:
            r = copies[id(m)]
            # written into the registries directly: a replica's parameters are not leaves
            for registry in ("_modules", "_parameters", "_buffers"):
                getattr(r, registry).update((name, None if v is None else copies[id(v)])
                                            for name, v in getattr(m, registry).items())
        replicas.append(copies[id(network)])
    return replicas


def _replica_tensor(t, device, share):
    if t.device != device:
        return t.to(device)
    return t if share else clone(t)


def _shallow_copy(module):
    replica = object.__new__(type(module))
    state = module.__dict__.copy()
    for registry in ("_parameters", "_buffers", "_modules"):
        state[registry] = state[registry].copy()
    object.__setattr__(replica, "__dict__", state)
    return replica


def parallel_apply(modules, inputs, kwargs_tup=None, devices=None):
    """Run ``modules[i](*inputs[i], **kwargs_tup[i])`` in parallel threads, as
    ``torch.nn.parallel.parallel_apply``.

    Each thread runs with the caller's grad mode and with its device current. An exception
    in a replica is raised again here, naming the replica and its device, with the
    original traceback in the message.

    Args:
        modules: the replicas.
        inputs: one argument tuple per replica (a non-tuple is a single argument).
        kwargs_tup: one keyword dict per replica (default: none).
        devices: one device per replica (default: that of the first tensor in its inputs).

    Returns:
        The list of outputs, in replica order.
    """
    n = len(modules)
    kwargs_tup = ({},) * n if kwargs_tup is None else kwargs_tup
    if devices is None:
        devices = [getattr(_first_tensor((args, kw)), "device", backend.CPU) for args, kw in zip(inputs, kwargs_tup)]
    if not n == len(inputs) == len(kwargs_tup) == len(devices):
        raise ValueError(f"parallel_apply: got {n} modules but {len(inputs)} inputs, {len(kwargs_tup)} kwargs and "
                         f"{len(devices)} devices: one of each per module is needed")
    devices = [_device(d, "device") for d in devices]
    grad_enabled = is_grad_enabled()  # the mode is per thread: each worker takes the caller's
    autocast_regions = autocast.carried_over()  # so is autocast
    results, failures = [None] * n, [None] * n

    def worker(i):
        try:
            with set_grad_enabled(grad_enabled), autocast_regions(), backend.device_guard(devices[i]):
                args = inputs[i] if isinstance(inputs[i], (list, tuple)) else (inputs[i],)
                results[i] = modules[i](*args, **kwargs_tup[i])
        except Exception as e:
            failures[i] = (e, traceback.format_exc())

    threads = [threading.Thread(target=worker, args=(i,), name=f"DataParallel replica {i}") for i in range(1, n)]
    for t in threads:
        t.start()
    if n:
        worker(0)  # the caller's thread does replica 0's share
    for t in threads:
        t.join()
    for i, failure in enumerate(failures):
        if failure is not None:
            _reraise(i, devices[i], *failure)
    return results


def _reraise(i, device, exc, tb):
    """Raise ``exc``'s type again, as PyTorch's ExceptionWrapper: where, and the original traceback."""
    msg = f"Caught {type(exc).__name__} in replica {i} on device {device}.\nOriginal {tb}"
    try:
        wrapped = type(exc)(msg)
    except Exception:  # an exception type that cannot be built from one message
        wrapped = RuntimeError(msg)
    raise wrapped from exc


def gather(outputs, target_device, dim=0):
    """Join the replicas' outputs on ``target_device``, as ``torch.nn.parallel.gather``.

    Tensors are concatenated along ``dim`` (differentiably); 0-dim tensors (e.g. a loss per
    replica) become a vector, with a warning, as in PyTorch; tuples, lists, namedtuples and
    dicts are gathered element by element; None stays None.

    Args:
        outputs: one output per replica, all of the same structure.
        target_device: where the result lives.
        dim: the dimension to concatenate along.

    Returns:
        One output of that structure.
    """
    target = _device(target_device, "output_device")

    def gather_map(outs):
        out = outs[0]
        if isinstance(out, Tensor):
            if all(o.ndim == 0 for o in outs):
                warnings.warn(f"Was asked to gather along dimension {dim}, but all input tensors were scalars; "
                              f"will instead unsqueeze and return a vector.")
                return cat([o.reshape(1).to(target) for o in outs], 0)
            return cat([o.to(target) for o in outs], dim)
        if out is None:
            return None
        if isinstance(out, dict):
            if any(len(o) != len(out) for o in outs):
                raise ValueError(f"All dicts must have the same number of keys: the replicas returned dicts with "
                                 f"{[len(o) for o in outs]} keys")
            return type(out)((k, gather_map([o[k] for o in outs])) for k in out)
        if _is_namedtuple(out):
            return type(out)(*map(gather_map, zip(*outs)))
        if isinstance(out, (tuple, list)):
            return type(out)(map(gather_map, zip(*outs)))
        raise TypeError(f"DataParallel: cannot gather replica outputs of type {type(out).__name__}: forward must "
                        f"return Tensors, None, or (nested) tuples, lists or dicts of them")

    return gather_map(outputs)


class DataParallel(Module):
    """Split each batch over several devices of one process, as ``torch.nn.DataParallel``.

    Every forward: the inputs are scattered along ``dim`` (tensors are chunked; tuples,
    lists and dicts are split element by element; other values are given whole to every
    replica), the module is replicated on each device, the replicas run in parallel
    threads, and their outputs are gathered on ``output_device`` along ``dim``.
    ``backward()`` accumulates the gradients of all replicas into the original
    parameters' ``.grad``, so an optimizer over ``model.parameters()`` works unchanged.

    Behaviour to know, as in PyTorch:

    * A batch of ``n`` rows over ``k`` devices is cut into chunks of ``ceil(n / k)``, so
      fewer than ``k`` replicas run when ``n`` is small.
    * Only replica 0 shares storage with the wrapped module: in-place buffer updates
      (BatchNorm's running statistics, computed from replica 0's chunk only) and attribute
      changes made during forward are kept on replica 0 and lost on the others.
    * A forward that returns a scalar (e.g. a loss) gives a vector of one value per replica
      (with a warning); take its mean.
    * Random ops in forward (Dropout) draw from one shared generator in whatever order the
      threads run, so they are not reproducible across runs.

    On the CPU, ``device_ids=["cpu", "cpu"]`` runs two replicas in threads (NumPy releases
    the GIL in its kernels). With no CUDA device and no ``device_ids`` (PyTorch's CPU-only
    behaviour), or with a single device, forward just calls the module.

    Args:
        module: the Module to parallelize; its parameters and buffers must be on
            ``device_ids[0]`` at every forward.
        device_ids: the devices: CUDA indices or devices (default: every visible CUDA
            device), or several ``"cpu"`` entries; CPU and CUDA cannot be mixed.
        output_device: where outputs are gathered (default ``device_ids[0]``; may be "cpu").
        dim: the dimension along which inputs are split and outputs joined.

    Attributes:
        module: the wrapped module (``state_dict`` keys get a ``"module."`` prefix).
        device_ids: the devices, as Device objects.
        output_device, src_device_obj: Devices.

    Example:
        >>> model = DataParallel(nn.Linear(4, 2), device_ids=["cpu", "cpu"])
        >>> model(dtrain.randn(5, 4)).shape     # rows 0-2 on replica 0, rows 3-4 on replica 1
        dtrain.Size([5, 2])
    """

    def __init__(self, module, device_ids=None, output_device=None, dim=0):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DataParallel: module must be a dtrain.nn.Module, got {type(module).__name__}")
        if not isinstance(dim, numbers.Integral) or isinstance(dim, bool):
            raise TypeError(f"DataParallel: dim must be an int, got {dim!r}")
        self.module = module
        self.dim = int(dim)
        if device_ids is None:
            device_ids = range(backend.cuda_device_count())
        self.device_ids = [_device(d, "device_ids entry") for d in device_ids]
        if not self.device_ids:
            self.output_device = self.src_device_obj = None
            return
        if len({d.type for d in self.device_ids}) > 1:
            raise ValueError(f"DataParallel: device_ids mixes CPU and CUDA devices "
                             f"({[str(d) for d in self.device_ids]}): give only CUDA devices, or only 'cpu' "
                             f"entries to run replicas in CPU threads")
        self.src_device_obj = self.device_ids[0]
        self.output_device = self.src_device_obj if output_device is None else _device(output_device, "output_device")
        for d in self.device_ids + [self.output_device]:
            backend.module_for(d)  # a clear error when CuPy or that GPU is missing
        if len(self.device_ids) == 1:
            self.module.to(self.src_device_obj)

    def forward(self, *inputs, **kwargs):
        if not self.device_ids:
            return self.module(*inputs, **kwargs)
        for t in itertools.chain(self.module.parameters(), self.module.buffers()):
            if t.device != self.src_device_obj:
                raise RuntimeError(f"module must have its parameters and buffers on device {self.src_device_obj} "
                                   f"(device_ids[0]) but found one of them on device: {t.device}")
        if inputs or kwargs:
            inputs, kwargs = self.scatter(inputs, kwargs, self.device_ids)
        else:  # a forward without arguments runs once, on device_ids[0]
            inputs, kwargs = ((),), ({},)
        if len(self.device_ids) == 1:
            return self.module(*inputs[0], **kwargs[0])
        replicas = self.replicate(self.module, self.device_ids[:len(inputs)])
        outputs = self.parallel_apply(replicas, inputs, kwargs)
        return self.gather(outputs, self.output_device)

    def scatter(self, inputs, kwargs, device_ids):
        return scatter_kwargs(inputs, kwargs, device_ids, dim=self.dim)

    def replicate(self, module, device_ids):
        return replicate(module, device_ids)

    def parallel_apply(self, replicas, inputs, kwargs):
        return parallel_apply(replicas, inputs, kwargs, self.device_ids[:len(replicas)])

    def gather(self, outputs, output_device):
        return gather(outputs, output_device, dim=self.dim)

    def extra_repr(self):
        return f"device_ids={[str(d) for d in self.device_ids]}" if self.device_ids else ""
