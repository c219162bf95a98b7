"""Runner profiles. The pipeline code never changes between them; only these options do.

- ``direct``: Beam's in-process portable runner (FnApiRunner), named explicitly: the generic
  DirectRunner would first try to download Prism from the internet and then silently fall back.
  It has batch semantics, which is exactly right for a bounded backfill. Backfills only.
- ``prism``: Beam's portable local runner (a Go binary built by ``scripts/install_prism.sh``),
  with real streaming semantics. Python workers run LOOPBACK, in this process. If the binary is
  missing we say so and stop; a stream never falls back to a batch runner.
- ``flink``: FlinkRunner against a Flink cluster (``--flink-master``), through Beam's Flink job
  server jar, passed explicitly (``--flink-job-server-jar``; set-up fetches it from Maven).
- ``dataflow``: Google Cloud Dataflow. The code ships to workers through ``setup.py``
  (``--setup_file``); workers run Beam's own SDK container on Dataflow's VMs.
- ``portable``: any Beam job endpoint (``--job-endpoint host:port``): Beam's Python job service,
  a Flink or Spark job server, or Prism started as a server.

Python workers never run in local Docker: LOOPBACK (in this process, for a cluster on this
machine), PROCESS (a boot command on each worker host) or EXTERNAL (a worker pool you start with
``python -m apache_beam.runners.worker.worker_pool_main`` next to each TaskManager).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

RUNNERS = ("direct", "prism", "flink", "dataflow", "portable")
BATCH_RUNNERS = RUNNERS
STREAMING_RUNNERS = ("prism", "flink", "dataflow", "portable")
ENVIRONMENTS = ("LOOPBACK", "PROCESS", "EXTERNAL")
FLINK_VERSIONS = ("1.19", "1.20", "2.0", "2.1", "2.2")  # Flink versions apache-beam 2.77 supports
DEFAULT_FLINK_VERSION = "1.19"  # the one set-up can install here (runners/local_flink/pom.xml says why)
ROOT = Path(__file__).resolve().parent.parent
INSTALLED_PRISM = ROOT / ".tools" / "prism" / "bin" / "prism"
SETUP_FILE = ROOT / "setup.py"


class RunnerError(ValueError):
    """A runner name or runner flag the user gave cannot work."""


@dataclass(frozen=True)
class RunnerProfile:
    """A runner and its flags, validated by ``profile_for`` before anything starts. Picklable, so
    chunk workers in other processes rebuild the same options."""

    name: str = "direct"
    prism_location: str | None = None
    environment: str | None = None
    environment_config: str | None = None
    # Flink
    flink_master: str | None = None
    flink_version: str | None = None
    flink_job_server_jar: str | None = None
    parallelism: int | None = None
    checkpointing_interval_ms: int | None = None
    # Dataflow
    project: str | None = None
    region: str | None = None
    temp_location: str | None = None
    staging_location: str | None = None
    job_name: str | None = None
    max_workers: int | None = None
    machine_type: str | None = None
    dry_run: bool = False
    # Portable
    job_endpoint: str | None = None

    def runner(self):
        if self.name == "direct":
            return in_process_runner()
        return {
            "prism": "PrismRunner",
            "flink": "FlinkRunner",
            "dataflow": "DataflowRunner",
            "portable": "PortableRunner",
        }[self.name]

    def options(self, extra_args: list[str] | None = None, streaming: bool = False):
        """Beam's ``PipelineOptions`` for this profile."""
        # Beam here, not when a profile is made: the command line makes one as it plans, before Beam loads
        from apache_beam.options.pipeline_options import PipelineOptions

        return PipelineOptions(extra_args or [], streaming=streaming, **self.option_values(streaming))

    def option_values(self, streaming: bool = False) -> dict:
        """The Beam pipeline options this profile sets (documented in the README, checked in tests)."""
        values: dict = {}
        if self.name == "prism":
            # Prism's dynamic splits hand a split bundle's rest to another bundle at once, which
            # may run the same key of a stateful stage beside the first part, each from the same
            # committed state: one part's state and timers are then lost (information bars
            # would miss a day's first trades). A bundle is never split here.
            values = {
                "prism_location": self.prism_location,
                "prism_log_level": "error",
                "experiments": ["prism_disable_sdf_split"],
            }
        elif self.name == "flink":
            values = {
                "flink_master": self.flink_master,
                "flink_version": self.flink_version,
                "flink_job_server_jar": self.flink_job_server_jar,
                "parallelism": self.parallelism or 2,
                "job_name": self.job_name,
            }
            if streaming and self.checkpointing_interval_ms:
                # Opt-in only: on the 2.62 job server no checkpoint completes while the reads run,
                # and one completing before the reader's first bundle ends lets the watermark
                # pass every trade read (README, Streams on Flink). Beam keeps Flink's sources
                # open forever once checkpointing is on, so a stream that ends (--stop-when-idle,
                # a drain) would never finish without the shutdown.
                values.update(
                    checkpointing_interval=self.checkpointing_interval_ms, shutdown_sources_after_idle_ms=1000
                )
        elif self.name == "dataflow":
            staging = self.staging_location or f"{self.temp_location.rstrip('/')}/staging"
            values = {
                "project": self.project,
                "region": self.region,
                "temp_location": self.temp_location,
                "staging_location": staging,
                "setup_file": str(SETUP_FILE),
                "save_main_session": False,
                "max_num_workers": self.max_workers or 10,
                "machine_type": self.machine_type or "n2-standard-2",
                "experiments": ["use_runner_v2"],
            }
            if self.job_name:
                values["job_name"] = self.job_name
            if streaming:
                values["enable_streaming_engine"] = True
            if self.dry_run:  # builds the job offline: no credentials, no staging, no submission
                values.update(dry_run=True, no_auth=True, sdk_location="container")
        elif self.name == "portable":
            values = {"job_endpoint": self.job_endpoint}
        if self.name in ("prism", "flink", "portable"):
            values["environment_type"] = self.environment or "LOOPBACK"
            config = self.environment_config
            if config is None and values["environment_type"] == "PROCESS":
                config = process_environment_config()
            if config:
                values["environment_config"] = config
        return {k: v for k, v in values.items() if v is not None}

    def describe(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, False)}


RUNNER_FLAGS = tuple(
    f.name for f in fields(RunnerProfile) if f.name not in ("name", "dry_run", "checkpointing_interval_ms")
)
"""The profile fields that are command-line flags of the same name (``--flink-master`` ...)."""


def process_environment_config() -> str:
    """PROCESS workers on this machine: Beam's Python boot program (``scripts/install_flink.sh``
    builds it), starting workers with the pipeline venv's python and without a venv of its own."""
    boot = ROOT / ".tools" / "flink" / "bin" / "beam-python-boot"
    if not os.access(boot, os.X_OK):
        raise RunnerError(
            f"Beam's Python boot program is missing ({boot}): run `bash scripts/install_flink.sh`, "
            "or pass --environment-config"
        )
    path = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    return json.dumps(
        {"command": str(boot.resolve()), "env": {"PATH": path, "RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT": "1"}}
    )


def prism_binary(explicit: str | None = None) -> str:
    """The Prism binary to use: ``--prism-location``, ``$CRYPTOBEAM_PRISM``, or the one set-up built."""
    candidate = Path(explicit or os.environ.get("CRYPTOBEAM_PRISM") or INSTALLED_PRISM)
    if not (candidate.is_file() and os.access(candidate, os.X_OK)):
        raise RunnerError(
            f"Prism is not installed at {candidate}: run `bash scripts/setup.sh` (or "
            "`bash scripts/install_prism.sh`), or pass --prism-location; a stream never falls "
            "back to a batch runner"
        )
    return str(candidate.resolve())


def in_process_runner():
    """FnApiRunner with its embedded worker's state cache off, and batch groupings that fire once
    per window built directly (``runners.batch_grouping``).

    The embedded worker keeps state in this process already; its cache only adds cost, and
    sizing each cached value with objsize walks every loaded module on every state access,
    which would dominate a backfill's run time.
    """
    # Beam here, not when a profile is made: the command line makes one as it plans, before Beam loads
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner, worker_handlers

    from runners import batch_grouping

    worker_handlers.STATE_CACHE_SIZE_MB = 0
    batch_grouping.install()
    return FnApiRunner()


def _require(profile: RunnerProfile, **flags) -> None:
    missing = [flag for flag, value in flags.items() if not value]
    if missing:
        raise RunnerError(f"--runner {profile.name} needs {', '.join('--' + m.replace('_', '-') for m in missing)}")


def _installed_flink_jar(version: str) -> str | None:
    jars = sorted((ROOT / ".tools" / "flink" / "jars").glob(f"beam-runners-flink-{version}-job-server-*.jar"))
    return str(jars[-1]) if jars else None


def profile_for(name: str, streaming: bool = False, **flags) -> RunnerProfile:
    """A validated profile: fails here, before anything starts, with a clear message."""
    available = STREAMING_RUNNERS if streaming else BATCH_RUNNERS
    if name not in available:
        why = " (a stream needs a runner with streaming semantics)" if streaming and name in RUNNERS else ""
        raise RunnerError(f"unknown runner {name!r}{why}; available: {', '.join(available)}")
    profile = RunnerProfile(name, **{k: v for k, v in flags.items() if v is not None})
    if profile.environment is not None:
        if profile.environment.upper() not in ENVIRONMENTS:
            raise RunnerError(
                f"--environment must be one of {', '.join(ENVIRONMENTS)} (never DOCKER: Python "
                f"workers do not run in local Docker), got {profile.environment!r}"
            )
        if name in ("direct", "prism", "dataflow"):
            raise RunnerError(f"--environment applies to --runner flink or portable, not {name}")
        profile = replace(profile, environment=profile.environment.upper())
        if profile.environment == "EXTERNAL" and not profile.environment_config:
            raise RunnerError("--environment EXTERNAL needs --environment-config host:port of a worker pool")
    if name == "prism":
        profile = replace(profile, prism_location=prism_binary(profile.prism_location))
    elif name == "flink":
        _require(profile, flink_master=profile.flink_master)
        version = profile.flink_version or DEFAULT_FLINK_VERSION
        if version not in FLINK_VERSIONS:
            raise RunnerError(
                f"--flink-version {version} is not supported by apache-beam 2.77; use one of "
                f"{', '.join(FLINK_VERSIONS)}, matching the cluster"
            )
        jar = profile.flink_job_server_jar or _installed_flink_jar(version)
        if not jar or not Path(jar).is_file():
            raise RunnerError(
                f"no Beam Flink {version} job-server jar at {jar or '.tools/flink/jars'}: run "
                "`bash scripts/install_flink.sh`, or pass --flink-job-server-jar"
            )
        profile = replace(profile, flink_version=version, flink_job_server_jar=str(Path(jar).resolve()))
    elif name == "dataflow":
        _require(profile, project=profile.project, region=profile.region, temp_location=profile.temp_location)
        if not profile.temp_location.startswith("gs://"):
            raise RunnerError(f"--temp-location must be a gs:// path for Dataflow, got {profile.temp_location!r}")
    elif name == "portable":
        _require(profile, job_endpoint=profile.job_endpoint)
    return profile
