"""Open a node's devices by driver name and URL, one connection per URL, and close them.

Two device entries may name the same URL when one device is reached through another (Alice's
polarization modulator is driven through her board's connection): the URL is opened once, with
the most specific of the drivers named for it (a subclass serves both entries). Two unrelated
drivers on one URL would fight over the line, so that is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from daemon.config import DeviceConfig, LinkConfig
from drivers import registry
from drivers.errors import DeviceError

OPEN_TIMEOUT_S = 5.0


class DeviceSetupError(RuntimeError):
    """A device could not be opened; one line naming the link, device, driver and URL."""


class DevicePool:
    """Every device of the node's links; ``close()`` closes each connection once."""

    def __init__(self, opener: Callable[..., object] | None = None,
                 timeout_s: float = OPEN_TIMEOUT_S):
        self._open = opener or (lambda driver, url: registry.create(driver, url,
                                                                    timeout_s=timeout_s))
        self._by_url: dict[str, object] = {}
        self.links: dict[str, dict[str, object]] = {}

    def open(self, links: Iterable[LinkConfig]) -> None:
        links = list(links)
        chosen = self._driver_per_url(links)
        try:
            for link in links:
                devices = {}
                for dev in link.devices:
                    if dev.url not in self._by_url:
                        self._by_url[dev.url] = self._open_one(link, dev, chosen[dev.url])
                    devices[dev.name] = self._by_url[dev.url]
                self.links[link.id] = devices
        except BaseException:
            self.close()
            raise

    def _open_one(self, link: LinkConfig, dev: DeviceConfig, driver: str):
        try:
            return self._open(driver, dev.url)
        except (DeviceError, OSError, ValueError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DeviceSetupError(f"link {link.id}: device {dev.name} ({driver} at "
                                   f"{dev.url}): {msg}") from None

    @staticmethod
    def _driver_per_url(links: list[LinkConfig]) -> dict[str, str]:
        named: dict[str, list[tuple[str, str]]] = {}
        for link in links:
            for dev in link.devices:
                named.setdefault(dev.url, []).append((f"{link.id}.{dev.name}", dev.driver))
        chosen = {}
        for url, uses in named.items():
            classes = {drv: registry.driver_class(drv) for _, drv in uses}
            best = [d for d, cls in classes.items()
                    if all(issubclass(cls, other) for other in classes.values())]
            if not best:
                listing = ", ".join(f"{where} ({drv})" for where, drv in uses)
                raise DeviceSetupError(f"URL {url} is named by unrelated drivers: {listing}; "
                                       f"one connection per URL needs one driver family")
            chosen[url] = best[0]
        return chosen

    def close(self) -> None:
        for driver in self._by_url.values():
            try:
                driver.close()
            except Exception:        # closing must reach every device
                pass
        self._by_url.clear()
        self.links.clear()
