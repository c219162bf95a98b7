"""A backfill of ethereum-etl token transfer files through the command line, beside Binance trades:
token activity, exchange flows and their fusion with the bars, reconciled, validated, and equal
to the plain-Python reference over the canonical transfers."""

from __future__ import annotations

import json
import random
from datetime import datetime, timezone

from io_connectors.bar_reader import final_bars
from io_connectors.formats.ethereum_etl import write_csv_text, write_json_lines
from tests.support.chain_records import (
    T0_SECONDS,
    address,
    flow_figures,
    reference_activity,
    reference_flows,
    retraction,
    token_address,
    transfer,
    transfers_table,
)
from tests.support.commands import cryptobeam

MINUTE_US = 60_000_000
USDT = "0xdac17f958d2ee523a2206206994597c13d831ec7"  # in the shipped token list, 6 decimals
EXCHANGE_WALLETS = {address(1): "Binance", address(2): "Binance", address(3): "Kraken"}


def _transfers(seed: int) -> list[dict]:
    rng = random.Random(seed)
    tokens = [USDT, token_address(7)]  # the second is in no token list: raw volume only
    rows = [
        transfer(rng.choice(tokens), rng.randrange(6), rng.randrange(6), rng.randrange(1, 10**12), block, i)
        for block in range(30)
        for i in range(rng.randrange(1, 5))
    ]
    return rows + [retraction(row) for row in rows[5:8]]


def test_backfill_of_ethereum_etl_files_beside_trades(tmp_path):
    rows = _transfers(3)
    (tmp_path / "chain").mkdir()
    csv_text = write_csv_text(transfers_table(rows[:60]), "token_transfer")
    broken = csv_text.splitlines(keepends=True)
    broken.insert(4, "0xnot-an-address,1,2\n")  # one bad line: one dead letter
    (tmp_path / "chain" / "token_transfers_a.csv").write_text("".join(broken))
    # the rest as JSON lines, with the first ten transfers delivered again
    (tmp_path / "chain" / "token_transfers_b.json").write_text(
        write_json_lines(transfers_table(rows[60:] + rows[:10]), "token_transfer")
    )
    (tmp_path / "labels.csv").write_text(
        "address,label,entity\n" + "".join(f"{a},{e} wallet,{e}\n" for a, e in EXCHANGE_WALLETS.items())
    )
    (tmp_path / "binance").mkdir()
    (tmp_path / "binance" / "BTCUSDT-aggTrades-2024-01-01.csv").write_text(
        "".join(  # a trade every 20 s: minutes 0 to 3
            f"{7000 + i},{42000 + i},0.5,{7000 + i},{7000 + i},{T0_SECONDS * 1000 + i * 20_000},false,true\n"
            for i in range(12)
        )
    )
    out = tmp_path / "out"
    result = cryptobeam(
        "backfill",
        "--input",
        f"ethereum-etl-token-transfers:{tmp_path}/chain/*",
        "--input",
        f"binance-aggtrades:{tmp_path}/binance/*.csv",
        "--bars",
        "time:1m",
        "--bars",
        "chain:1m",
        "--labels",
        str(tmp_path / "labels.csv"),
        "--fuse",
        "USDT=bars:binance:BTCUSDT",
        "--out",
        str(out),
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr + result.stdout

    summary = json.loads((out / "_SUMMARY.json").read_text())
    assert summary["token_transfers"]["records_in"] == len(rows) + 10 + 1  # and the bad line
    assert summary["token_transfers"]["duplicates"] == 10
    assert summary["dead_letters_by_reason"] == {"malformed": 1}
    assert summary["reconciled"], summary["problems"]

    decimals = {USDT: 6}
    expected = reference_activity(rows, MINUTE_US, decimals)
    activity = final_bars(str(out), "token_activity")
    got = {
        ("ethereum", row["token_address"], int(row["window_start"].timestamp()) * 1_000_000): row for row in activity
    }
    assert set(got) == set(expected)
    for key, figures in expected.items():
        assert {name: got[key][name] for name in figures} == figures
    assert all(row["volume"] is None and not row["token_known"] for row in activity if row["token_address"] != USDT)

    flows = final_bars(str(out), "exchange_flows")
    expected_flows = reference_flows(rows, MINUTE_US, EXCHANGE_WALLETS)
    assert flow_figures(flows) == expected_flows

    fused = final_bars(str(out), "chain_market_fusion")
    by_minute = {int(row["window_start"].timestamp() - T0_SECONDS) // 60: row for row in fused}
    usdt_minutes = {(start // 1_000_000 - T0_SECONDS) // 60 for (_, token, start) in expected if token == USDT}
    assert set(by_minute) == usdt_minutes | {0, 1, 2, 3}
    for minute, row in by_minute.items():
        assert row["has_market"] == (minute <= 3) and row["has_chain"] == (minute in usdt_minutes)
    first = by_minute[0]
    assert first["close"] == 42002.0 and first["market_trades"] == 3
    start = datetime.fromtimestamp(T0_SECONDS, timezone.utc)
    if ("ethereum", USDT, int(start.timestamp()) * 1_000_000) in expected:
        assert first["transfer_count"] == expected[("ethereum", USDT, T0_SECONDS * 1_000_000)]["transfer_count"]

    validated = cryptobeam("validate", str(out))
    assert validated.returncode == 0, validated.stdout + validated.stderr
