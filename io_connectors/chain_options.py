"""The options of ``cryptobeam collect --chain`` and the follower's defaults they show.

The command line builds its parser from these at start, so this module imports nothing beyond the
standard library: no Beam, no Kafka client, no HTTP client. Checking the options and running the
collector is ``io_connectors.collectors.chain_collector``; following the chain is
``io_connectors.chain_follower``, which takes its defaults from here.
"""

from __future__ import annotations

CHAINS = ("ethereum",)
EXCHANGE_OPTIONS = ("--feed", "--exchange", "--symbols", "--channel", "--ws-url", "--rest-url", "--max-trades")
"""``collect``'s options that only exchanges' feeds take."""
DEFAULT_REORG_DEPTH = 64
DEFAULT_SAFE_DEPTH = 32
DEFAULT_FINALIZED_DEPTH = 64
DEFAULT_POLL_INTERVAL = 2.0


def add_chain_collect_options(parser) -> None:
    """The options of ``collect --chain``; ``--kafka``, ``--dead-letter-topic``, ``--max-seconds``,
    ``--backoff-base``, ``--backoff-max`` and ``--no-progress`` are ``collect``'s own."""
    chain = parser.add_argument_group("on-chain data (--chain)")
    chain.add_argument("--chain", choices=CHAINS, help="follow this chain's head through --rpc instead of exchanges")
    chain.add_argument("--rpc", metavar="URL", help="the node's JSON-RPC endpoint, e.g. http://127.0.0.1:8545")
    chain.add_argument("--blocks-topic", default="blocks", help="topic for blocks (default: blocks)")
    chain.add_argument(
        "--transfers-topic", default="token_transfers", help="topic for ERC-20 transfers (default: token_transfers)"
    )
    chain.add_argument(
        "--reorg-depth",
        type=int,
        default=DEFAULT_REORG_DEPTH,
        help=f"deepest reorg reconciled, in blocks; a deeper one stops the run (default {DEFAULT_REORG_DEPTH})",
    )
    chain.add_argument(
        "--safe-depth",
        type=int,
        default=DEFAULT_SAFE_DEPTH,
        help=f"blocks below the head counted safe when the node has no 'safe' tag (default {DEFAULT_SAFE_DEPTH})",
    )
    chain.add_argument(
        "--finalized-depth",
        type=int,
        default=DEFAULT_FINALIZED_DEPTH,
        help="blocks below the head counted finalized when the node has no 'finalized' tag "
        f"(default {DEFAULT_FINALIZED_DEPTH})",
    )
    chain.add_argument(
        "--poll-interval",
        type=float,
        default=DEFAULT_POLL_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between polls (default {DEFAULT_POLL_INTERVAL:g})",
    )
    chain.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="JSON file of the follower's state, written after Kafka acknowledges each step; a restart resumes from it",
    )
    chain.add_argument("--from-block", type=int, help="first block to publish (default: the head at the first start)")
    chain.add_argument("--max-blocks", type=int, help="stop after publishing this many blocks")
    chain.add_argument("--until-block", type=int, help="stop once the chain is followed up to this block")
