"""``cryptobeam stream``: Kafka trades to bars, unbounded, on a streaming runner (Prism locally).

Ctrl-C drains: the reads stop, the watermark reaches the end of time, every open window fires
its final pane, the files are flushed and the offsets committed; a second Ctrl-C cancels.

The command line imports this module at start to build its parser, so it holds the options
only; the run is ``beam_pipelines.stream_run``, imported when the stream starts.
"""

from __future__ import annotations

from beam_pipelines.cli_common import add_bar_options, add_instruments_option, add_runner_options, add_sink_options
from beam_pipelines.collect_command import add_metrics_port_option


def add_stream_options(stream) -> None:
    stream.add_argument("--kafka", required=True, help="Kafka bootstrap servers, e.g. 127.0.0.1:9092")
    stream.add_argument("--topic", default="trades", help="trades topic (default: trades)")
    add_instruments_option(stream)
    stream.add_argument(
        "--status-topic",
        default=None,
        help="with consolidated bars: the collectors' connection states (cryptobeam collect writes "
        "them to feed_status), so a venue is excluded while its collector reports it disconnected",
    )
    stream.add_argument(
        "--transfers-topic",
        default=None,
        help="with --bars chain:INTERVAL: the ERC-20 transfers cryptobeam collect --chain writes "
        "(token_transfers), read beside --topic's trades; without any bars of trades, read alone",
    )
    stream.add_argument(
        "--group",
        default="cryptobeam-stream",
        help="consumer group; its committed offsets are where a restarted stream resumes",
    )
    stream.add_argument("--out", required=True, help="output directory")
    add_bar_options(stream, allowed_lateness="10m")
    add_sink_options(stream, streaming=True)
    add_runner_options(stream, "prism")
    stream.add_argument(
        "--watermark-delay",
        default="5s",
        help="how far a partition's watermark trails its newest timestamp (default 5s)",
    )
    stream.add_argument(
        "--idle-after",
        default="5s",
        help="a caught-up partition silent this long stops holding the watermark back (default 5s)",
    )
    stream.add_argument(
        "--stop-when-idle",
        default=None,
        help="drain and stop once every partition is read to its end and no partition has received "
        "a message for this long, e.g. 30s",
    )
    stream.add_argument(
        "--flush-every", default="5s", help="write a Parquet file per partition this often (default 5s)"
    )
    stream.add_argument("--commit-every", default="5m", help="commit offsets every this much event time (default 5m)")
    stream.add_argument("--no-progress", action="store_true", help="do not print progress lines")
    add_metrics_port_option(stream)
