"""Dataflow Flex Template entry point for the stream: template parameters in, the same pipeline
``cryptobeam stream`` builds, submitted without waiting (a template launcher must return).

Dataflow calls it as ``python launcher.py --kafka=... --out=... <pipeline options>``; the
parameters are those of ``metadata.json``, everything else goes to Beam as pipeline options.

Build and run the template (Cloud Build makes the image; nothing needs Docker locally):

    gcloud dataflow flex-template build gs://BUCKET/templates/cryptobeam-stream.json \\
        --image-gcr-path REGION-docker.pkg.dev/PROJECT/REPO/cryptobeam-stream:latest \\
        --sdk-language PYTHON --flex-template-base-image PYTHON3 \\
        --metadata-file runners/dataflow/metadata.json --py-path . \\
        --env FLEX_TEMPLATE_PYTHON_PY_FILE=runners/dataflow/launcher.py \\
        --env FLEX_TEMPLATE_PYTHON_SETUP_FILE=setup.py
    gcloud dataflow flex-template run cryptobeam-stream-$(date +%Y%m%d-%H%M%S) \\
        --template-file-gcs-location gs://BUCKET/templates/cryptobeam-stream.json --region REGION \\
        --parameters kafka=BROKER:9092,out=gs://BUCKET/bars,interval=1m,early=5s,allowed_lateness=10m
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

# Dataflow runs this file as a script: the project's packages resolve once the line above has run
import apache_beam as beam  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from beam_pipelines.cli_common import CommandParser  # noqa: E402
from beam_pipelines.stream import build_stream  # noqa: E402
from beam_pipelines.stream_command import add_stream_options  # noqa: E402
from beam_pipelines.stream_run import stream_config  # noqa: E402

METADATA = Path(__file__).resolve().parent / "metadata.json"


def template_parameters() -> set[str]:
    return {p["name"] for p in json.loads(METADATA.read_text())["parameters"]}


def split_arguments(argv: list[str]) -> tuple[list[str], list[str]]:
    """(``cryptobeam stream`` arguments, Beam pipeline options)."""
    names = template_parameters()
    ours, beam_options = [], []
    for argument in argv:
        name, _, value = argument.lstrip("-").partition("=")
        if argument.startswith("--") and name in names:
            if name == "fill_gaps":
                ours += ["--fill-gaps"] if value.lower() == "true" else []
            elif value:
                ours.append(f"--{name.replace('_', '-')}={value}")
        else:
            beam_options.append(argument)
    return ours, beam_options


def build(argv: list[str]):
    """The pipeline, built but not run."""
    ours, beam_options = split_arguments(argv)
    parser = CommandParser(prog="cryptobeam-stream-template")
    add_stream_options(parser)
    config = stream_config(parser.parse_args(ours))
    options = PipelineOptions(beam_options, streaming=True, save_main_session=False)
    pipeline = beam.Pipeline(options=options)
    build_stream(pipeline, config)
    return pipeline


def main(argv: list[str] | None = None) -> None:
    build(sys.argv[1:] if argv is None else argv).run()  # submit; Dataflow runs it from here


if __name__ == "__main__":
    main()
