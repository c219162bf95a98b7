"""``cryptobeam chain export``: a block range from an Ethereum node's JSON-RPC into ethereum-etl's files.

    cryptobeam chain export --rpc http://127.0.0.1:8545 --from-block 100 --to-block 199 --out chain/

writes ``chain/blocks/blocks_100_199.csv``, ``chain/token_transfers/token_transfers_100_199.csv``
and ``chain/dead_letters/dead_letters_100_199.jsonl`` (``io_connectors.chain_export`` says what
each holds), shows progress, and ends with a summary table.

The command line imports this module at start to build its parser, so it holds the options only;
the run is ``beam_pipelines.chain_run``. The exit code: 0 when the range is written, 2 for a user
error (a bad URL, a node that does not answer, a range the node does not have), 3 when the chain
changed under the export in a way re-reading could not mend or the disk failed; an error is one
line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse

DEFAULT_BATCH_BLOCKS = 100


def add_chain_parser(subparsers) -> argparse.ArgumentParser:
    chain = subparsers.add_parser("chain", help="on-chain data: read blocks and token transfers from an Ethereum node")
    actions = chain.add_subparsers(dest="chain_command", parser_class=type(chain), required=True)
    export = actions.add_parser(
        "export",
        help="write a block range's blocks and ERC-20 transfers from a node's JSON-RPC as ethereum-etl's files",
    )
    export.add_argument(
        "--rpc", required=True, metavar="URL", help="the node's JSON-RPC URL, e.g. http://127.0.0.1:8545"
    )
    export.add_argument("--from-block", required=True, type=int, metavar="N", help="first block to export")
    export.add_argument("--to-block", required=True, type=int, metavar="M", help="last block to export (inclusive)")
    export.add_argument("--out", required=True, metavar="DIR", help="output directory")
    export.add_argument(
        "--format", default="csv", choices=("csv", "json"), help="csv (default) or json (JSON lines), as ethereum-etl"
    )
    export.add_argument(
        "--batch-blocks",
        type=int,
        default=DEFAULT_BATCH_BLOCKS,
        metavar="K",
        help=f"blocks read per JSON-RPC batch and per eth_getLogs query (default {DEFAULT_BATCH_BLOCKS})",
    )
    export.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each answer (default 30)")
    export.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    return chain
