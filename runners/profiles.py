"""Runner profiles. The pipeline code never changes between them; only these options do.

- ``direct``: Beam's in-process portable runner (FnApiRunner), named explicitly: the generic
  DirectRunner would first try to download Prism from the internet and then silently fall back.
  It has batch semantics, which is exactly right for a bounded backfill.
- ``prism``: Beam's portable local runner (a Go binary built by ``scripts/install_prism.sh``),
  with real streaming semantics: watermarks, processing-time triggers, EARLY and LATE panes.
  Python workers run LOOPBACK, in this process. If the binary is missing we say so and stop;
  we never fall back to a batch runner.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from apache_beam.options.pipeline_options import PipelineOptions

BATCH_RUNNERS = ("direct", "prism")
STREAMING_RUNNERS = ("prism",)
ROOT = Path(__file__).resolve().parent.parent
INSTALLED_PRISM = ROOT / ".tools" / "prism" / "bin" / "prism"


class RunnerError(ValueError):
    """A runner name or runner flag the user gave cannot work."""


@dataclass(frozen=True)
class RunnerProfile:
    name: str
    prism_location: str | None = None

    def runner(self):
        if self.name == "direct":
            return in_process_runner()
        if self.name == "prism":
            from apache_beam.runners.portability.prism_runner import PrismRunner
            return PrismRunner()
        raise RunnerError(f"unknown runner {self.name!r}; available: {', '.join(BATCH_RUNNERS)}")

    def options(self, extra_args: list[str] | None = None, streaming: bool = False) -> PipelineOptions:
        settings = {}
        if self.name == "prism":
            settings = {"prism_location": self.prism_location or prism_binary(), "environment_type": "LOOPBACK",
                        "prism_log_level": "error"}
        return PipelineOptions(extra_args or [], streaming=streaming, **settings)


def prism_binary(explicit: str | None = None) -> str:
    """The Prism binary to use: ``--prism-location``, ``$CRYPTOBEAM_PRISM``, or the one set-up built."""
    candidate = Path(explicit or os.environ.get("CRYPTOBEAM_PRISM") or INSTALLED_PRISM)
    if not (candidate.is_file() and os.access(candidate, os.X_OK)):
        raise RunnerError(f"Prism is not installed at {candidate}: run `bash scripts/setup.sh` (or "
                          "`bash scripts/install_prism.sh`), or pass --prism-location; a stream never falls "
                          "back to a batch runner")
    return str(candidate.resolve())


def in_process_runner():
    """FnApiRunner with its embedded worker's state cache off.

    The embedded worker keeps state in this process already; its cache only adds cost, and
    sizing each cached value with objsize walks every loaded module (about 1 ms per state
    access here), which would dominate a backfill's run time.
    """
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner, worker_handlers

    worker_handlers.STATE_CACHE_SIZE_MB = 0
    return FnApiRunner()


def profile_for(name: str, streaming: bool = False, prism_location: str | None = None) -> RunnerProfile:
    """A validated profile: fails here, before anything starts, if the runner cannot work."""
    available = STREAMING_RUNNERS if streaming else BATCH_RUNNERS
    if name not in available:
        why = " (a stream needs a runner with streaming semantics)" if streaming and name in BATCH_RUNNERS else ""
        raise RunnerError(f"unknown runner {name!r}{why}; available: {', '.join(available)}")
    if name == "prism":
        prism_location = prism_binary(prism_location)
    return RunnerProfile(name, prism_location)
