"""What a sink is: the contract every entry of ``io_connectors.sinks.SINKS`` keeps.

Beam-free at import, so the command line can offer, check and record sinks without importing
Beam or a sink's client library: a sink imports those in ``write``, which runs while the
pipeline is built.
"""

from __future__ import annotations

import argparse
from typing import Any, NamedTuple

ALWAYS = "always"
"""Written by every run of that kind; ``--sink NAME`` is accepted and changes nothing."""
CHOSEN = "chosen"
"""Written when the user passes ``--sink NAME``."""
NOT_OFFERED = "not offered"


class SinkOptionError(ValueError):
    """The user's options for a sink do not make sense; its message is the one line the user sees."""


class SinkTarget(NamedTuple):
    """A sink a run writes to, with its parsed options (picklable, Beam-free; None when it has none)."""

    name: str
    target: Any = None


class SinkWrites(NamedTuple):
    """What a sink's writing returns: the files it wrote (``WrittenFile``s, for a sink that writes
    files), and the rows it rejected, as dead letters (stage ``sink``), which the run writes with
    its own dead letters."""

    files: Any = None
    rejected: tuple = ()


class Sink:
    """One output of bars. A subclass sets the class attributes and overrides what it needs."""

    name: str = ""
    description: str = ""
    in_backfill: str = CHOSEN
    """ALWAYS, CHOSEN (with ``--sink``) or NOT_OFFERED, for a bounded run."""
    in_stream: str = CHOSEN
    """The same for a stream."""

    def use(self, streaming: bool) -> str:
        return self.in_stream if streaming else self.in_backfill

    def add_options(self, command: argparse.ArgumentParser, streaming: bool) -> None:
        """Add this sink's own command-line options (the backfill's or the stream's)."""

    def target_from_args(self, args: argparse.Namespace, chosen: bool, streaming: bool) -> Any:
        """This sink's target from the parsed options; None if it needs none. ``chosen`` says whether
        the run writes to it; options given to a sink that is not chosen are a SinkOptionError too."""
        return None

    def settings(self, target: Any) -> dict:
        """What a chunk manifest records of this sink's options (``target`` None: not written to):
        a chunk written with other settings is not reused. A sink that records nothing when it is not
        written to keeps older manifests valid."""
        return {}

    def write(self, bars, target: Any) -> SinkWrites:
        """Apply this sink's writing to ``bars`` (``beam_pipelines.outputs.BarsToWrite``), naming its
        steps itself (step names are unique per pipeline: start them with ``WriteBars``)."""
        raise NotImplementedError
