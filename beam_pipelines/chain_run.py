"""Running ``cryptobeam chain export`` (``beam_pipelines.chain_command`` holds its options): a block
range from the node into ethereum-etl's files (``io_connectors.chain_export``), with progress and a
summary table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from beam_pipelines.cli_common import PipelineFailed, UserError, check_writable, progress_bar
from io_connectors.chain_export import ChainChanged, ExportError, ExportResult, check_range, export_range
from io_connectors.ethereum_rpc import EthereumRpc, RpcError, display_url


def run_chain(args, console: Console) -> int:
    """Export the range; a ``UserError`` or ``PipelineFailed`` is the command line's one line."""
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
    with client, progress_bar(args.no_progress or not console.is_terminal) as progress:
        total = max(args.to_block - args.from_block + 1, 0)
        task = progress.add_task("exporting blocks", total=total, detail="")

        def on_progress(result: ExportResult) -> None:
            retried = f", {result.retries:,} requests retried" if result.retries else ""
            progress.update(task, completed=result.blocks_read, detail=f"{result.transfers:,} transfers{retried}")

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


def summary_table(result: ExportResult, out: str) -> Table:
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
