"""Boolean switches checked as PyTorch checks them: a module whose attributes are flags."""
import sys
import types

PRECISIONS = ("highest", "high", "medium")


class FlagModule(types.ModuleType):
    """A module whose boolean flags (``FLAGS``: name -> (default, PyTorch's setter name)) refuse
    non-bool values and unknown names, as ``torch.backends.cudnn`` does.

    Example:
        >>> sys.modules[__name__].__class__ = FlagModule  # in the flag module, with FLAGS defined
    """

    def __getattr__(self, name):
        flags = self.__dict__.get("FLAGS", {})
        if name in flags:
            return self.__dict__["_values"].get(name, flags[name][0])
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __setattr__(self, name, value):
        flags = self.__dict__.get("FLAGS", {})
        if name in flags:
            if not isinstance(value, bool):
                raise RuntimeError(f"{flags[name][1]} expects a bool, but got {type(value).__name__}")
            self.__dict__["_values"][name] = value
            return
        super().__setattr__(name, value)


class Flags:
    """An object of boolean flags that refuses unknown names (``torch.backends.cuda.matmul``)."""

    def __init__(self, owner, **flags):
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_flags", dict(flags))  # name -> (value, PyTorch's setter name)

    def __getattr__(self, name):
        flags = object.__getattribute__(self, "_flags")
        if name in flags:
            return flags[name][0]
        raise AttributeError(f"Unknown attribute {name}")

    def __setattr__(self, name, value):
        flags = object.__getattribute__(self, "_flags")
        if name not in flags:
            raise AttributeError(f"Unknown attribute {name}")
        if not isinstance(value, bool):
            raise RuntimeError(f"{flags[name][1]} expects a bool, but got {type(value).__name__}")
        flags[name] = (value, flags[name][1])

    def __repr__(self):
        return f"<{self._owner} flags: {', '.join(f'{k}={v[0]}' for k, v in self._flags.items())}>"


def make_flag_module(name):
    """Turn module ``name`` (which defines FLAGS) into a :class:`FlagModule`."""
    module = sys.modules[name]
    module._values = {}
    module.__class__ = FlagModule
