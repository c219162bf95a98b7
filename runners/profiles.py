"""Runner profiles. The pipeline code never changes between them; only these options do.

``direct`` is Beam's in-process portable runner (FnApiRunner), named explicitly: the generic
DirectRunner would first try to download Prism from the internet and then silently fall back.
It has batch semantics, which is exactly right for a bounded backfill.
"""
from __future__ import annotations

from dataclasses import dataclass

from apache_beam.options.pipeline_options import PipelineOptions

BATCH_RUNNERS = ("direct",)


class RunnerError(ValueError):
    """A runner name or runner flag the user gave cannot work."""


@dataclass(frozen=True)
class RunnerProfile:
    name: str

    def runner(self):
        if self.name == "direct":
            return in_process_runner()
        raise RunnerError(f"unknown runner {self.name!r}; available: {', '.join(BATCH_RUNNERS)}")

    def options(self, extra_args: list[str] | None = None) -> PipelineOptions:
        return PipelineOptions(extra_args or [])


def in_process_runner():
    """FnApiRunner with its embedded worker's state cache off.

    The embedded worker keeps state in this process already; its cache only adds cost, and
    sizing each cached value with objsize walks every loaded module (about 1 ms per state
    access here), which would dominate a backfill's run time.
    """
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner, worker_handlers

    worker_handlers.STATE_CACHE_SIZE_MB = 0
    return FnApiRunner()


def profile_for(name: str) -> RunnerProfile:
    if name not in BATCH_RUNNERS:
        raise RunnerError(f"unknown runner {name!r}; available: {', '.join(BATCH_RUNNERS)}")
    return RunnerProfile(name)
