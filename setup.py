"""cryptobeam: event-time OHLCV/VWAP bars from crypto trades on Apache Beam.

setup.py (not only pyproject.toml) because Dataflow workers install the pipeline's packages
through ``--setup_file``.
"""
from setuptools import setup

setup(
    name="cryptobeam",
    version="0.1.0",
    description="Event-time OHLCV/VWAP bars, data-quality reports and dead letters from crypto trades, "
                "one Apache Beam code path for backfill and live streams.",
    python_requires=">=3.11,<3.14",
    packages=["beam_pipelines", "transforms", "io_connectors", "io_connectors.formats", "io_connectors.collectors", "runners",
              "runners.dataflow",
              "runners.local_kafka", "schemas"],
    package_data={"schemas": ["*.avsc"], "runners.local_kafka": ["pom.xml"], "runners.dataflow": ["metadata.json"]},
    install_requires=[
        "apache-beam[gcp]>=2.77,<2.78",
        "pyarrow>=17,<26",
        "numpy>=1.26,<3",
        "polars>=1.20,<3",
        "fastavro>=1.9,<2",
        "rich>=13,<16",
        "pydantic>=2.6,<3",
        "confluent-kafka>=2.6,<3",
        "websockets>=13,<18",
        "httpx>=0.27,<1",
        "build>=1.2,<2",  # Beam stages setup.py as an sdist for Dataflow workers with it
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-timeout>=2.3,<3",
            "hypothesis>=6.100,<7",
            "duckdb>=1.1,<3",
        ],
        "profile": [  # what the README's profiling commands use
            "py-spy>=0.4,<1",
            "pyinstrument>=5,<6",
        ],
    },
    entry_points={"console_scripts": ["cryptobeam=beam_pipelines.cli:entry_point"]},
)
