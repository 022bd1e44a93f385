"""The one place that builds a schedd backend from its config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from rsub.wire.paths import ensure_private_dir
from rsubd.backends.classads import quiet_classad_library
from rsubd.backends.local.auth import TokenCheckedSchedd
from rsubd.backends.local.faults import FaultySchedd
from rsubd.backends.local.scheduler import LocalSchedd
from rsubd.backends.schedd import Schedd
from rsubd.tokens.manager import Credential


class BackendConfig(Protocol):
    """What a backend is built from: the fields of `rsubd.config.ScheddConfig` read here.

    A protocol rather than the config class itself, so the backends stay below the
    config (which knows the services' settings too).
    """

    @property
    def name(self) -> str: ...
    @property
    def schedd_name(self) -> str: ...
    @property
    def backend(self) -> str: ...
    @property
    def slots(self) -> int | None: ...
    @property
    def faults_file(self) -> str | None: ...
    @property
    def pool(self) -> str | None: ...
    @property
    def address(self) -> str | None: ...
    @property
    def condor_config(self) -> str | None: ...
    @property
    def params(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def call_timeout(self) -> float: ...
    @property
    def transfer_timeout(self) -> float: ...
    @property
    def dagman(self) -> str: ...
    @property
    def max_jobs_per_submission(self) -> int: ...
    @property
    def max_jobs_per_owner(self) -> int: ...


def make_schedd(cfg: BackendConfig, state_dir: Path, credential: Callable[[], Credential] | None = None,
                local: Schedd | None = None) -> Schedd:
    """The one place that builds a schedd backend from its config.

    `credential` gives the token profile's current token; `local` reuses an existing
    embedded scheduler (a second token profile on the same local schedd).
    """
    quiet_classad_library()  # rsubd makes ClassAds whatever the backend (a user's constraint is checked here)
    if cfg.backend == "local":
        if local is None:
            ensure_private_dir(state_dir / "local")  # the embedded schedds' queues, spools and sandboxes
        # The embedded scheduler enforces the same submission limits as the schedd it stands for.
        inner = local or LocalSchedd(cfg.name, state_dir / "local" / cfg.name, slots=cfg.slots, dagman=cfg.dagman,
                                     max_jobs_per_submission=cfg.max_jobs_per_submission,
                                     max_jobs_per_owner=cfg.max_jobs_per_owner)
        if local is None and cfg.faults_file:
            inner = FaultySchedd(inner, Path(cfg.faults_file))
        if credential is None:
            return inner
        return TokenCheckedSchedd(inner, credential, owns_inner=local is None)
    if cfg.backend == "htcondor":
        # Imported only when used: a daemon with no htcondor schedd never loads the worker's module.
        from rsubd.backends.condor import CondorSchedd, CondorSettings

        return CondorSchedd(CondorSettings(
            name=cfg.name, schedd_name=cfg.schedd_name, pool=cfg.pool, address=cfg.address,
            condor_config=cfg.condor_config,
            params=dict(cfg.params), call_timeout=cfg.call_timeout, transfer_timeout=cfg.transfer_timeout,
        ), credential)
    # The config accepts only the backends above; this guards a new one added there and not here.
    raise ValueError(f"backend {cfg.backend!r} is not available")
