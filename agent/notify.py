"""systemd readiness and watchdog (sdnotify); silent no-ops when not under systemd."""

import asyncio
import os

import sdnotify


class Notifier:
    def __init__(self) -> None:
        self._n = sdnotify.SystemdNotifier()
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        # ping at a third of the watchdog period; default 10 s when not supervised
        self.watchdog_interval_s = usec / 3e6 if usec else 10.0

    def ready(self, status: str = "") -> None:
        self._n.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, status: str) -> None:
        self._n.notify(f"STATUS={status}")

    def stopping(self) -> None:
        self._n.notify("STOPPING=1")

    def watchdog(self) -> None:
        self._n.notify("WATCHDOG=1")

    async def watchdog_loop(self) -> None:
        while True:
            self.watchdog()
            await asyncio.sleep(self.watchdog_interval_s)
