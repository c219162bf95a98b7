"""Local fake exchanges for the collector tests, speaking each exchange's public wire format.

A fake websocket server plays one script per connection: trades, snapshots, raw (malformed)
frames, a dropped connection, silence; after its script a connection idles (with heartbeats
where the exchange sends them). A fake Binance REST server answers ``aggTrades`` and
``historicalTrades`` by ``fromId`` from the same trades, in small pages, after a queue of canned
failures (e.g. a 429 with ``Retry-After``). Everything runs on one event loop in a daemon thread,
so the collector under test can run in the test's own thread or in a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from aiohttp import web
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

T0_US = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class FakeTrade:
    symbol: str
    trade_id: int
    price: float
    amount: float
    taker_side: str  # buy or sell
    time_us: int

    @property
    def time_ms(self) -> int:
        return self.time_us // 1000

    def rfc3339(self, extra_digits: str = "") -> str:
        """The event time as RFC 3339 UTC, optionally with sub-microsecond digits appended."""
        moment = EPOCH + timedelta(microseconds=self.time_us)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + extra_digits + "Z"


def make_trades(symbol: str, first_id: int, count: int, start_us: int = T0_US) -> list[FakeTrade]:
    """Deterministic trades with whole-millisecond times (Binance sends ms)."""
    return [
        FakeTrade(
            symbol,
            i,
            round(100 + i * 0.01, 2),
            round(0.001 * (i % 7 + 1), 3),
            "buy" if i % 2 else "sell",
            start_us + (i - first_id) * 250_000,
        )
        for i in range(first_id, first_id + count)
    ]


class Background:
    """An event loop in a daemon thread that hosts the fake servers."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self._closers = []
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def start(self, server) -> str:
        """Start a fake server on this loop; its base URL."""
        url = self.run(server.start())
        self._closers.append(server.close)
        return url

    def close(self):
        for close in self._closers:
            self.run(close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class FakeExchange:
    """A scripted websocket server; subclasses supply the handshake and the frames."""

    heartbeat_every: float | None = None

    def __init__(self, trades: list[FakeTrade], scripts: list[list[tuple]]):
        self.trades = {(t.symbol, t.trade_id): t for t in trades}
        self.scripts = scripts
        self.connections: list[dict] = []  # per connection: the request path and the messages received
        self.sent: list[tuple[str, int]] = []

    async def start(self) -> str:
        self._server = await serve(self._serve, "127.0.0.1", 0)
        return f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def close(self):
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, websocket):
        connection = {"path": websocket.request.path, "received": [], "sequence": 0}
        self.connections.append(connection)
        script = self.scripts[len(self.connections) - 1] if len(self.connections) <= len(self.scripts) else []
        reader = asyncio.create_task(self._read(websocket, connection))
        try:
            await self.handshake(websocket, connection)
            for step in script:
                if await self._play(websocket, connection, step) == "ended":
                    return
            await self._idle(websocket, connection)
        except ConnectionClosed:
            pass
        finally:
            reader.cancel()

    async def _read(self, websocket, connection):
        async for message in websocket:
            connection["received"].append(json.loads(message))

    async def wait_for_message(self, connection, matches, timeout: float = 5) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in connection["received"]:
                if matches(message):
                    return message
            await asyncio.sleep(0.01)
        raise TimeoutError("the client did not subscribe")

    async def _play(self, websocket, connection, step):
        kind, *arguments = step
        if kind in ("trades", "snapshot"):
            for frame in self.frames(connection, [self.trades[ref] for ref in arguments[0]], kind):
                await websocket.send(frame)
            self.sent += arguments[0]
        elif kind == "drip":  # one trade per frame, spaced out
            refs, delay = arguments
            for ref in refs:
                for frame in self.frames(connection, [self.trades[ref]], "trades"):
                    await websocket.send(frame)
                self.sent.append(ref)
                await asyncio.sleep(delay)
        elif kind == "raw":
            await websocket.send(arguments[0])
        elif kind == "heartbeat":
            await websocket.send(self.heartbeat(connection))
        elif kind == "drop":  # the connection dies without a close handshake
            websocket.transport.abort()
            return "ended"
        elif kind == "silence":  # the feed freezes but the socket stays open
            await websocket.wait_closed()
            return "ended"
        else:
            raise ValueError(f"unknown script step {kind!r}")

    async def _idle(self, websocket, connection):
        if self.heartbeat_every is None:
            await websocket.wait_closed()
            return
        while True:
            await asyncio.sleep(self.heartbeat_every)
            await websocket.send(self.heartbeat(connection))

    def next_sequence(self, connection) -> int:
        connection["sequence"] += 1
        return connection["sequence"] - 1

    async def handshake(self, websocket, connection):
        raise NotImplementedError

    def frames(self, connection, trades: list[FakeTrade], kind: str) -> list[str]:
        raise NotImplementedError

    def heartbeat(self, connection) -> str:
        raise NotImplementedError


class FakeBinance(FakeExchange):
    """Combined streams: the URL subscribes; every trade is its own ``{"stream", "data"}`` frame."""

    def __init__(self, trades, scripts, channel: str = "aggTrade"):
        super().__init__(trades, scripts)
        self.channel = channel

    async def handshake(self, websocket, connection):
        path, _, query = connection["path"].partition("?")
        assert path == "/stream" and query.startswith("streams="), connection["path"]
        connection["streams"] = query.removeprefix("streams=").split("/")

    def frames(self, connection, trades, kind):
        return [
            json.dumps({"stream": f"{t.symbol.lower()}@{self.channel}", "data": binance_event(t, self.channel)})
            for t in trades
        ]


def binance_event(t: FakeTrade, channel: str) -> dict:
    if channel == "aggTrade":
        return {
            "e": "aggTrade",
            "E": t.time_ms + 2,
            "s": t.symbol,
            "a": t.trade_id,
            "p": f"{t.price:.8f}",
            "q": f"{t.amount:.8f}",
            "f": t.trade_id * 3,
            "l": t.trade_id * 3 + 2,
            "T": t.time_ms,
            "m": t.taker_side == "sell",
            "M": True,
        }
    return {
        "e": "trade",
        "E": t.time_ms + 2,
        "s": t.symbol,
        "t": t.trade_id,
        "p": f"{t.price:.8f}",
        "q": f"{t.amount:.8f}",
        "T": t.time_ms,
        "m": t.taker_side == "sell",
        "M": True,
    }


class FakeCoinbase(FakeExchange):
    """Advanced Trade: subscribe messages, a ``subscriptions`` ack, then ``market_trades`` events whose
    ``side`` is the maker's, newest trade first, and ``heartbeats``."""

    heartbeat_every = 0.2
    MAKER_SIDE_OF_TAKER = {"buy": "SELL", "sell": "BUY"}

    async def handshake(self, websocket, connection):
        request = await self.wait_for_message(connection, lambda m: m.get("channel") == "market_trades")
        await websocket.send(
            self.envelope(connection, "subscriptions", [{"subscriptions": {"market_trades": request["product_ids"]}}])
        )

    def envelope(self, connection, channel: str, events: list) -> str:
        return json.dumps(
            {
                "channel": channel,
                "client_id": "",
                "timestamp": "2024-01-01T00:00:00.123456789Z",
                "sequence_num": self.next_sequence(connection),
                "events": events,
            }
        )

    def frames(self, connection, trades, kind):
        rows = [
            {
                "trade_id": str(t.trade_id),
                "product_id": t.symbol,
                "price": f"{t.price}",
                "size": f"{t.amount}",
                "side": self.MAKER_SIDE_OF_TAKER[t.taker_side],
                "time": t.rfc3339("789"),
            }
            for t in sorted(trades, key=lambda t: -t.trade_id)
        ]
        return [
            self.envelope(
                connection, "market_trades", [{"type": "snapshot" if kind == "snapshot" else "update", "trades": rows}]
            )
        ]

    def heartbeat(self, connection):
        return self.envelope(
            connection,
            "heartbeats",
            [{"current_time": "2024-01-01 00:00:01.5 +0000 UTC m=+1.5", "heartbeat_counter": "1"}],
        )


class FakeKraken(FakeExchange):
    """WebSocket v2: a status message on connect, a subscribe ack per symbol (or an error for a
    symbol in ``unknown_symbols``) after ``answer_after`` seconds, then ``trade`` snapshots/updates
    and heartbeats."""

    heartbeat_every = 0.2

    def __init__(self, trades, scripts, unknown_symbols=(), answer_after: float = 0.0):
        super().__init__(trades, scripts)
        self.unknown_symbols = set(unknown_symbols)
        self.answer_after = answer_after  # seconds before answering a subscription, as a slow exchange

    async def handshake(self, websocket, connection):
        await websocket.send(
            json.dumps(
                {
                    "channel": "status",
                    "type": "update",
                    "data": [{"api_version": "v2", "connection_id": 1, "system": "online", "version": "2.0.0"}],
                }
            )
        )
        request = await self.wait_for_message(connection, lambda m: m.get("method") == "subscribe")
        await asyncio.sleep(self.answer_after)
        for symbol in request["params"]["symbol"]:
            if symbol in self.unknown_symbols:
                await websocket.send(
                    json.dumps(
                        {
                            "error": f"Currency pair not supported {symbol}",
                            "method": "subscribe",
                            "success": False,
                            "symbol": symbol,
                            "time_in": "2024-01-01T00:00:00Z",
                            "time_out": "2024-01-01T00:00:00Z",
                        }
                    )
                )
            else:
                await websocket.send(
                    json.dumps(
                        {
                            "method": "subscribe",
                            "result": {
                                "channel": "trade",
                                "snapshot": request["params"].get("snapshot", True),
                                "symbol": symbol,
                            },
                            "success": True,
                            "time_in": "2024-01-01T00:00:00Z",
                            "time_out": "2024-01-01T00:00:00Z",
                        }
                    )
                )

    def frames(self, connection, trades, kind):
        rows = [
            {
                "symbol": t.symbol,
                "side": t.taker_side,
                "price": t.price,
                "qty": t.amount,
                "ord_type": "market",
                "trade_id": t.trade_id,
                "timestamp": t.rfc3339(),
            }
            for t in trades
        ]
        return [json.dumps({"channel": "trade", "type": "snapshot" if kind == "snapshot" else "update", "data": rows})]

    def heartbeat(self, connection):
        return json.dumps({"channel": "heartbeat"})


class FakeBinanceRest:
    """``GET /api/v3/aggTrades`` and ``/api/v3/historicalTrades`` by ``fromId``, ``page_size`` trades at a
    time, after serving each canned failure in ``failures`` (status, headers) once, in order."""

    def __init__(self, trades: list[FakeTrade], page_size: int = 2, failures=()):
        self.trades = sorted(trades, key=lambda t: (t.symbol, t.trade_id))
        self.page_size = page_size
        self.failures = list(failures)
        self.requests: list[dict] = []

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/api/v3/aggTrades", self._aggregate_trades)
        app.router.add_get("/api/v3/historicalTrades", self._historical_trades)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def close(self):
        await self._runner.cleanup()

    def _page(self, request):
        symbol, from_id = request.query["symbol"], int(request.query["fromId"])
        limit = min(int(request.query.get("limit", 500)), self.page_size)
        record = {"at": time.monotonic(), "path": request.path, "symbol": symbol, "fromId": from_id}
        self.requests.append(record)
        if self.failures:
            status, headers = self.failures.pop(0)
            record["status"] = status
            return web.json_response({"code": -1003, "msg": "Too many requests."}, status=status, headers=headers)
        record["status"] = 200
        return [t for t in self.trades if t.symbol == symbol and t.trade_id >= from_id][:limit]

    def _page_as(self, request, record) -> web.Response:
        """The next page of trades for the request, each as ``record`` shapes it, or the queued failure."""
        page = self._page(request)
        if isinstance(page, web.Response):
            return page
        return web.json_response([record(t) for t in page])

    async def _aggregate_trades(self, request):
        return self._page_as(
            request,
            # The websocket event's fields without its envelope (event type and time, symbol).
            lambda t: {k: v for k, v in binance_event(t, "aggTrade").items() if k not in ("e", "E", "s")},
        )

    async def _historical_trades(self, request):
        return self._page_as(
            request,
            lambda t: {
                "id": t.trade_id,
                "price": f"{t.price:.8f}",
                "qty": f"{t.amount:.8f}",
                "quoteQty": f"{t.price * t.amount:.8f}",
                "time": t.time_ms,
                "isBuyerMaker": t.taker_side == "sell",
                "isBestMatch": True,
            },
        )
