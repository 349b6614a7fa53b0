"""Driver names -> driver classes, so a config line "dicon-mems @ /dev/ttyUSB0" builds a driver.

Drivers register themselves with ``@register("name")``; ``create``/``available`` first import
every module of the driver packages so registration never depends on import order.
"""

from __future__ import annotations

import importlib
import pkgutil

_DRIVERS: dict[str, type] = {}
_DRIVER_PACKAGES = ("drivers.polarization", "drivers.switch", "drivers.detector",
                    "drivers.board", "drivers.modulator")
_loaded = False


class UnknownDriver(LookupError):
    def __init__(self, name: str, known: list[str]):
        self.driver_name = name
        super().__init__(f"unknown driver {name!r}; known drivers: {', '.join(known) or 'none'}")


def register(name: str):
    """Class decorator: make the driver creatable as ``name``."""
    def decorate(cls):
        existing = _DRIVERS.get(name)
        if existing is not None and existing is not cls and \
                (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"driver name {name!r} already used by {existing.__qualname__}")
        _DRIVERS[name] = cls
        cls.driver_name = name
        return cls
    return decorate


def _load_builtin_drivers() -> None:
    global _loaded
    if _loaded:
        return
    for package_name in _DRIVER_PACKAGES:
        try:
            package = importlib.import_module(package_name)
        except ModuleNotFoundError as exc:
            if exc.name == package_name:
                continue  # that family of drivers is not installed
            raise
        for info in pkgutil.iter_modules(package.__path__, package_name + "."):
            importlib.import_module(info.name)
    _loaded = True


def available() -> list[str]:
    _load_builtin_drivers()
    return sorted(_DRIVERS)


def driver_class(driver_name: str) -> type:
    _load_builtin_drivers()
    try:
        return _DRIVERS[driver_name]
    except KeyError:
        raise UnknownDriver(driver_name, sorted(_DRIVERS)) from None


def create(driver_name: str, url: str, **options):
    """Open ``url`` with the driver registered as ``driver_name`` (model defaults apply)."""
    return driver_class(driver_name).from_url(url, **options)
