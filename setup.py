"""cryptobeam: event-time OHLCV/VWAP bars from crypto trades on Apache Beam.

setup.py (not only pyproject.toml) because Dataflow workers install the pipeline's packages
through ``--setup_file``.
"""

from setuptools import find_packages, setup

# Every data file the code opens at run time, by package: an installed (non-editable) cryptobeam
# has only what is listed here. tests/test_packaging.py builds the wheel and checks it.
PACKAGE_DATA = {
    "schemas": ["*.avsc"],
    "io_connectors": ["*.csv"],  # instrument tables
    "runners.dataflow": ["metadata.json"],
    "runners.local_flink": ["pom.xml"],
    "runners.local_kafka": ["pom.xml"],
}

setup(
    name="cryptobeam",
    version="0.1.0",
    description="Event-time OHLCV/VWAP bars, data-quality reports and dead letters from crypto trades, "
    "one Apache Beam code path for backfill and live streams.",
    python_requires=">=3.11,<3.14",
    packages=find_packages(exclude=["tests", "tests.*", "benchmarks", "benchmarks.*", "scripts", "scripts.*"]),
    package_data=PACKAGE_DATA,
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
        # --sink iceberg: SQL (SQLite) catalog; -core writes day() partitions
        "pyiceberg[sql-sqlite,pyiceberg-core]>=0.12,<0.13",
        "prometheus-client>=0.20,<1",  # --metrics-port of collect and stream
        "plotly>=6,<8",  # cryptobeam report: its wheel carries the JavaScript the report embeds
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-timeout>=2.3,<3",
            "hypothesis>=6.100,<7",
            "duckdb>=1.1,<3",
            # drives Debian's chromium (scripts/install_debian_packages.sh) in the report's browser test
            "playwright>=1.49,<2",
            "ruff>=0.17.6,<0.18",  # .ci/run lints and checks formatting; its style may change in a minor version
        ],
        "profile": [  # what CONTRIBUTING.md's profiling commands use
            "py-spy>=0.4,<1",
            "pyinstrument>=5,<6",
        ],
    },
    entry_points={"console_scripts": ["cryptobeam=beam_pipelines.cli:entry_point"]},
)
