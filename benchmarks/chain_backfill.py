"""Chain backfill benchmark: ERC-20 token transfers in ethereum-etl CSV through cryptobeam's
on-chain tables (token activity, exchange flows), records per second.

    .venv/bin/python benchmarks/chain_backfill.py [--transfers 1000000] [--tokens 2000] [--interval 1h]
    .venv/bin/python benchmarks/chain_backfill.py --in-process --profile   # where the time goes

Generates ``--transfers`` transfers shaped like mainnet's: a block every 12 s with about 150
transfers, tokens drawn from a Zipf law (a few stablecoins carry most transfers), senders and
receivers from a pool of addresses, a hundred of them labelled as five exchanges, values up to
10**24. They are written as one ethereum-etl CSV file (the columns ``write_csv_text`` writes:
ethereum-etl's own, then block_hash and block_timestamp). Then it runs

    cryptobeam backfill --input ethereum-etl-token-transfers:FILE --bars chain:INTERVAL
        --tokens TOKENS.csv --labels LABELS.csv --out OUT

and prints the wall time and records/s. ``--in-process`` runs the same pipeline in this process
instead (no command line, no chunk workers), which ``--profile`` profiles.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

from io_connectors.formats.ethereum_etl import write_csv_text  # noqa: E402
from schemas import arrow_schema  # noqa: E402

T0_SECONDS = 1_704_067_200  # 2024-01-01T00:00:00Z
TRANSFERS_PER_BLOCK = 150
EXCHANGES = ("binance", "coinbase", "kraken", "okx", "bybit")


def _hex(rng: np.random.Generator, rows: int, digits: int) -> pa.Array:
    """``rows`` random lower-case 0x-prefixed hex strings of ``digits`` digits."""
    alphabet = np.frombuffer(b"0123456789abcdef", np.uint8)
    text = np.empty((rows, digits + 2), np.uint8)
    text[:, 0], text[:, 1] = ord("0"), ord("x")
    text[:, 2:] = alphabet[rng.integers(0, 16, (rows, digits))]
    offsets = np.arange(0, rows * (digits + 2) + 1, digits + 2, dtype=np.int32)
    return pa.StringArray.from_buffers(rows, pa.py_buffer(offsets), pa.py_buffer(text.tobytes()))


def synthetic_transfers(transfers: int, tokens: int, addresses: int = 200_000, seed: int = 25) -> pa.Table:
    """A ``token_transfer`` table of ``transfers`` rows in block order."""
    rng = np.random.default_rng(seed)
    token_pool = _hex(rng, tokens, 40)
    address_pool = _hex(rng, addresses, 40)
    blocks = -(-transfers // TRANSFERS_PER_BLOCK)
    block_numbers = 19_000_000 + np.arange(blocks, dtype=np.int64)
    block_hashes = _hex(rng, blocks, 64)
    row_block = np.arange(transfers) // TRANSFERS_PER_BLOCK
    log_index = (np.arange(transfers) % TRANSFERS_PER_BLOCK).astype(np.int64)
    token_rank = np.minimum(rng.zipf(1.3, transfers), tokens) - 1
    values = (rng.integers(1, 10**12, transfers, dtype=np.int64).astype(object)) * (
        10 ** rng.integers(0, 13, transfers)
    ).astype(object)
    seconds = T0_SECONDS + 12 * row_block.astype(np.int64)
    index = pa.array(row_block, pa.int64())
    block_hash = block_hashes.take(index)
    columns = {
        "chain": pa.repeat(pa.scalar("ethereum"), transfers),
        "token_address": token_pool.take(pa.array(token_rank, pa.int64())),
        "from_address": address_pool.take(pa.array(rng.integers(0, addresses, transfers), pa.int64())),
        "to_address": address_pool.take(pa.array(rng.integers(0, addresses, transfers), pa.int64())),
        "value": pa.array([str(v) for v in values], pa.string()),
        "transaction_hash": _hex(rng, transfers, 64),
        "log_index": pa.array(log_index),
        "block_number": pa.array(block_numbers[row_block]),
        "block_hash": block_hash,
        "block_timestamp": pa.array(seconds),
        "event_time": pa.array(seconds * 1_000_000).cast(pa.timestamp("us", tz="UTC")),
        "transfer_id": pc.binary_join_element_wise(block_hash, pa.array(log_index).cast(pa.string()), "_"),
        "status": pa.repeat(pa.scalar("finalized"), transfers),
        "retracted": pa.repeat(pa.scalar(False), transfers),
        "publication": pa.repeat(pa.scalar(0), transfers),
    }
    schema = arrow_schema("token_transfer")
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema), token_pool, address_pool


def write_inputs(folder: Path, transfers: int, tokens: int) -> tuple[Path, Path, Path]:
    table, token_pool, address_pool = synthetic_transfers(transfers, tokens)
    csv_path = folder / "token_transfers.csv"
    csv_path.write_text(write_csv_text(table, "token_transfer"))
    tokens_path = folder / "tokens.csv"
    symbols = ["USDT", "USDC", "WETH", "DAI"] + [f"TK{i}" for i in range(4, min(tokens, 500))]
    tokens_path.write_text(
        "chain,address,symbol,decimals,canonical_asset\n"
        + "".join(
            f"ethereum,{address},{symbol},{6 if symbol in ('USDT', 'USDC') else 18},{symbol}\n"
            for address, symbol in zip(token_pool.to_pylist(), symbols)
        )
    )
    labels_path = folder / "labels.csv"
    labels_path.write_text(
        "address,label,entity\n"
        + "".join(
            f"{address},{EXCHANGES[i % 5]} hot wallet {i},{EXCHANGES[i % 5]}\n"
            for i, address in enumerate(address_pool.to_pylist()[:100])
        )
    )
    return csv_path, tokens_path, labels_path


def run_cli(csv_path: Path, tokens_path: Path, labels_path: Path, interval: str, out: Path) -> float:
    command = [
        str(Path(sys.executable).parent / "cryptobeam"),
        "backfill",
        "--input",
        f"ethereum-etl-token-transfers:{csv_path}",
        "--bars",
        f"chain:{interval}",
        "--tokens",
        str(tokens_path),
        "--labels",
        str(labels_path),
        "--out",
        str(out),
        "--no-progress",
    ]
    print(" ".join(command))
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def run_in_process(csv_path: Path, tokens_path: Path, labels_path: Path, interval: str) -> tuple[float, dict]:
    import apache_beam as beam

    from beam_pipelines.accounting import counters_of
    from io_connectors.chain_tables import chain_spec_from_files
    from io_connectors.files import InputFile
    from io_connectors.source_formats import SOURCES
    from io_connectors.sources import ReadTradeFiles
    from runners.profiles import in_process_runner
    from transforms.bar_spec import BarSpec
    from transforms.trades_to_bars import TradesToBars

    source = SOURCES["ethereum-etl-token-transfers"]
    spec = BarSpec.of(interval, time_bars=False, chain=chain_spec_from_files(str(tokens_path), str(labels_path)))
    started = time.perf_counter()
    pipeline = beam.Pipeline(runner=in_process_runner())
    read = pipeline | "ReadTradeFiles" >> ReadTradeFiles(
        source, [InputFile(str(csv_path), os.path.getsize(csv_path), "ethereum-etl-token-transfers")]
    )
    results = {"token_transfers": read.raw} | "TradesToBars" >> TradesToBars(spec, None, transfer_parser=source.parser)
    for name, rows in results["tables"].items():
        rows | f"Count[{name}]" >> beam.combiners.Count.Globally()
    result = pipeline.run()
    result.wait_until_finish()
    return time.perf_counter() - started, counters_of(result)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=1_000_000)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--interval", default="1h")
    parser.add_argument("--in-process", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the generated inputs and outputs")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="chain_backfill_"))
    try:
        started = time.perf_counter()
        csv_path, tokens_path, labels_path = write_inputs(folder, args.transfers, args.tokens)
        print(
            f"generated {args.transfers:,} transfers ({csv_path.stat().st_size / 1e6:,.0f} MB CSV) "
            f"in {time.perf_counter() - started:,.1f} s"
        )
        if args.in_process or args.profile:
            profiler = cProfile.Profile() if args.profile else None
            if profiler:
                profiler.enable()
            seconds, counters = run_in_process(csv_path, tokens_path, labels_path, args.interval)
            if profiler:
                profiler.disable()
                pstats.Stats(profiler).sort_stats(os.environ.get("PROFILE_SORT", "cumulative")).print_stats(40)
            print({k: v for k, v in counters.items() if k.startswith("token_transfer.")})
        else:
            seconds = run_cli(csv_path, tokens_path, labels_path, args.interval, folder / "out")
        print(f"{args.transfers:,} transfers in {seconds:,.1f} s: {args.transfers / seconds:,.0f} records/s")
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
