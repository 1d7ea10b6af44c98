"""Following the central policy bundle: every node polls it, and a manager activates a new one
in each partition it runs (each cell records its own `PolicyActivated`, so each partition
replays on its own); partitions it takes over later start with it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from onduty.config import Config, ConfigError
from onduty.fleet.policies import Bundle, PolicyBundles
from onduty.log.pg import DatabaseUnavailable

logger = logging.getLogger("onduty.cells")

POLL_S = 5.0


class PolicyWatch:
    def __init__(
        self,
        bundles: PolicyBundles,
        current: Callable[[], Config],
        adopt: Callable[[Config, Bundle], None],
        *,
        poll: float = POLL_S,
    ) -> None:
        self._bundles, self._current, self._adopt, self._poll = bundles, current, adopt, poll
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="onduty-policy", daemon=True)
        self._refused: str | None = None  # a bundle this onduty cannot read: said once
        self._adopted: str | None = None

    def check(self) -> bool:
        """Adopt the active bundle if it is not the policy in force; whether one was."""
        local = self._current()
        # the version of the bundle adopted, not the one computed here: an onduty that fills
        # in other defaults computes another hash for the same bundle, and would adopt it again
        bundle = self._bundles.changed_from(self._adopted or local.version)
        if bundle is None or bundle.version == self._refused:
            return False
        try:
            config = bundle.apply_to(local)
        except ConfigError as error:
            logger.error("central policy %s not adopted: %s", bundle.version, error)
            self._refused = bundle.version
            return False
        self._adopt(config, bundle)
        self._adopted = bundle.version
        return True

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._poll):
            try:
                self.check()
            except DatabaseUnavailable as error:
                logger.warning("central policy not checked: %s", error)
            except Exception:
                logger.exception("central policy check failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._bundles.close()
