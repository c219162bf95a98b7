"""``cryptobeam chain export``: a block range from an Ethereum node's JSON-RPC into ethereum-etl's files.

    cryptobeam chain export --rpc http://127.0.0.1:8545 --from-block 100 --to-block 199 --out chain/

writes ``chain/blocks/blocks_100_199.csv``, ``chain/token_transfers/token_transfers_100_199.csv``
and ``chain/dead_letters/dead_letters_100_199.jsonl`` (``io_connectors.chain_export`` says what
each holds), shows progress, and ends with a summary table.

``add_chain_parser`` adds the sub-command to the ``cryptobeam`` parser; ``run_chain`` runs it and
returns the exit code: 0 when the range is written, 2 for a user error (a bad URL, a node that does
not answer, a range the node does not have), 3 when the chain changed under the export in a way
re-reading could not mend or the disk failed; an error is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from beam_pipelines.cli_common import PipelineFailed, UserError, check_writable

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


def run_chain(args, console: Console) -> int:
    """Run ``cryptobeam chain ...``; errors are raised as ``UserError`` or ``PipelineFailed`` for the
    command line to print as one line."""
    return _export(args, console)


def _export(args, console: Console) -> int:
    # httpx and the export: the command line imports this module at start, for its parser
    from io_connectors.chain_export import ChainChanged, ExportError, ExportResult, check_range, export_range
    from io_connectors.ethereum_rpc import EthereumRpc, RpcError, display_url

    if args.timeout <= 0:
        raise UserError("--timeout must be positive")
    try:
        check_range(args.from_block, args.to_block, args.batch_blocks)
    except ExportError as error:
        raise UserError(str(error)) from None
    try:
        client = EthereumRpc(args.rpc, timeout=args.timeout, batch_size=min(max(args.batch_blocks, 1), 100))
    except RpcError as error:
        raise UserError(str(error)) from None
    check_writable(args.out)
    with client, _progress(args.no_progress or not console.is_terminal) as progress:
        total = max(args.to_block - args.from_block + 1, 0)
        task = progress.add_task("exporting blocks", total=total, transfers="")

        def on_progress(result: "ExportResult") -> None:
            retried = f", {result.retries:,} requests retried" if result.retries else ""
            progress.update(task, completed=result.blocks_read, transfers=f"{result.transfers:,} transfers{retried}")

        try:
            result = export_range(
                client, args.from_block, args.to_block, args.out, args.format, args.batch_blocks, on_progress
            )
        except ExportError as error:
            raise UserError(str(error)) from None
        except RpcError as error:
            raise UserError(f"the node at {display_url(args.rpc)} could not be read: {error}") from None
        except ChainChanged as error:
            raise PipelineFailed(str(error)) from None
    console.print(summary_table(result, args.out))
    for path in result.files:
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)
    if result.finalized is not None and result.to_block > result.finalized:
        console.print(
            f"[yellow]note: blocks after the finalized head, {result.finalized:,}, may still be reorganized[/yellow]"
        )
    return 0


def _progress(disabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TextColumn("{task.fields[transfers]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=disabled,
        transient=False,
    )


def summary_table(result, out: str) -> Table:
    table = Table(title=f"cryptobeam chain export → {out}", show_header=True, header_style="bold")
    table.add_column("records", justify="left")
    table.add_column("count", justify="right")
    seconds = max(result.seconds, 1e-9)
    finalized = "unknown" if result.finalized is None else f"{result.finalized:,}"
    rows = [
        ("blocks", f"{result.from_block:,} .. {result.to_block:,}"),
        ("node head (finalized)", f"{result.head:,} ({finalized})"),
        ("blocks read", f"{result.blocks_read:,}"),
        ("  written", f"{result.blocks:,}"),
        ("token transfers written", f"{result.transfers:,}"),
        ("dead letters", f"{sum(result.dead_letters.values()):,}"),
        *[(f"  {reason}", f"{n:,}") for reason, n in sorted(result.dead_letters.items())],
        ("requests retried", f"{result.retries:,}"),
        ("batches read again (the chain moved)", f"{result.rereads:,}"),
        ("elapsed", f"{result.seconds:,.1f} s"),
        ("  blocks/s", f"{result.blocks_read / seconds:,.0f}"),
        ("  transfers/s", f"{result.transfers / seconds:,.0f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table
