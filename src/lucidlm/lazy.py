"""A package's names imported when first used (PEP 562), so that importing the package does not wait for what
those names need (PyTorch, for `lucidlm.GPT`)."""

import importlib
import sys
from collections.abc import Callable


def names_from(package: str, homes: dict[str, str]) -> Callable[[str], object]:
    """The module `__getattr__` of `package`: each name of `homes` (name -> the module that defines it) is
    imported on first use and kept in the package from then on."""

    def __getattr__(name: str) -> object:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(homes[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
