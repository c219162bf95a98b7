"""An Ethereum node's JSON-RPC over HTTP, and its blocks and logs as the chain contract's rows.

``EthereumRpc`` asks the node, in JSON-RPC batches where there are several questions. A connection
error, a timeout, HTTP 429 or 5xx, or an answer that is not well-formed JSON-RPC is tried again
after a jittered backoff, a bounded number of times; then one of the ``RpcError`` subclasses says
in one line what went wrong, for the command line to show or a collector to retry later. The node
saying no (a JSON-RPC error object) is ``NodeError`` at once: asking again would get the same answer.

``block_row`` and ``transfer_row`` turn the node's JSON into rows shaped like ``schemas/block.avsc``
and ``schemas/token_transfer.avsc`` (the chain data contract): quantities from hex to int, a transfer's
value from its 32 data bytes to an exact decimal string (never a float), addresses from the topics,
lower-cased. A record they cannot read raises ``UnreadableRecord``, whose ``reason`` names the dead
letter ``block_rows`` and ``transfer_rows`` make of it, carrying the node's JSON as its payload.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence
from urllib.parse import urlsplit

import httpx

from io_connectors.backoff import Backoff
from transforms.dead_letter import dead_letter

log = logging.getLogger("cryptobeam.ethereum")

CHAIN = "ethereum"
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
"""keccak256("Transfer(address,address,uint256)"): ERC-20's and ERC-721's Transfer event."""
BLOCK_TAGS = ("latest", "safe", "finalized")
STATUSES = BLOCK_TAGS
RETRYABLE_STATUS = {408, 425, 429}
INT64_MAX = 2**63 - 1

_QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,64}")
_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_DATA = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
_ADDRESS_TOPIC = re.compile(r"0x0{24}([0-9a-fA-F]{40})")


class RpcError(Exception):
    """The node could not be asked, or its answer could not be used; ``str()`` is one line."""


class InvalidRpcUrl(RpcError):
    """The URL given for the node is not an http(s) URL with a host."""


class NodeUnreachable(RpcError):
    """Every attempt failed to connect, timed out or got HTTP 429/5xx."""


class MalformedResponse(RpcError):
    """Every attempt got an answer that is not the well-formed JSON-RPC this request asks for;
    ``payload`` is the last answer as received."""

    def __init__(self, message: str, payload: bytes = b""):
        super().__init__(message)
        self.payload = payload


class NodeError(RpcError):
    """The node answered with an error: a JSON-RPC error object (``code``), or an HTTP status that
    asking again will not change (``http_status``)."""

    def __init__(self, message: str, code: int | None = None, http_status: int | None = None):
        super().__init__(message)
        self.code = code
        self.http_status = http_status


class UnreadableRecord(ValueError):
    """A block or log that cannot become a contract row; ``reason`` is its dead letter's reason."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def checked_rpc_url(url: str) -> str:
    """The URL if it can name a JSON-RPC endpoint over HTTP; ``InvalidRpcUrl`` saying why otherwise."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number raises ValueError
    except ValueError as error:
        raise InvalidRpcUrl(f"bad node URL {url!r}: {error}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRpcUrl(f"bad node URL {url!r}: use http://HOST:PORT or https://HOST/PATH")
    return url


def display_url(url: str) -> str:
    """The URL without what may be a secret: providers put API keys in the path, query or user part,
    and error messages and dead letters are shared."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    hidden = "/…" if parts.path.strip("/") or parts.query or parts.username else ""
    return f"{parts.scheme}://{host}{port}{hidden}"


def block_parameter(block: int | str) -> str:
    """A block number as a JSON-RPC quantity, or one of the tags latest, safe, finalized."""
    if isinstance(block, str):
        if block not in BLOCK_TAGS:
            raise ValueError(f"block tag {block!r} is not one of {', '.join(BLOCK_TAGS)}")
        return block
    if isinstance(block, bool) or not isinstance(block, int) or block < 0:
        raise ValueError(f"block number {block!r} is not a non-negative integer")
    return hex(block)


@dataclass
class EthereumRpc:
    """A JSON-RPC client of one node. ``on_retry(attempt, problem)`` is called before each retry,
    which is also logged at INFO: a command shows its count, not a line per retry. Retries wait
    with full jitter (``io_connectors.backoff``), from ``backoff_base`` up to ``backoff_cap``."""

    url: str
    timeout: float = 10.0
    attempts: int = 5
    backoff_base: float = 0.25
    backoff_cap: float = 4.0
    batch_size: int = 100
    on_retry: Callable[[int, str], None] | None = None
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1), init=False, repr=False)
    _http: httpx.Client | None = field(default=None, init=False, repr=False)
    _backoff: Backoff = field(init=False, repr=False)

    def __post_init__(self):
        checked_rpc_url(self.url)
        if self.attempts < 1 or self.batch_size < 1:
            raise ValueError("attempts and batch_size must be at least 1")
        self._backoff = Backoff(base=self.backoff_base, cap=self.backoff_cap)
        self._http = httpx.Client(
            timeout=self.timeout, headers={"User-Agent": "cryptobeam", "Content-Type": "application/json"}
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EthereumRpc:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    @property
    def where(self) -> str:
        return display_url(self.url)

    # -- the node's methods ------------------------------------------------------------------------

    def block_number(self) -> int:
        return parse_quantity(self.call("eth_blockNumber", []), "eth_blockNumber")

    def chain_id(self) -> int:
        return parse_quantity(self.call("eth_chainId", []), "eth_chainId")

    def blocks_by_number(self, blocks: Iterable[int | str], full_transactions: bool = False) -> list[dict | None]:
        """The node's blocks, in the order asked, in batches; None for a block it does not have (yet)."""
        calls = [("eth_getBlockByNumber", [block_parameter(b), full_transactions]) for b in blocks]
        return [_object_or_none(result, method) for (method, _), result in zip(calls, self.batch(calls))]

    def block_by_hash(self, block_hash: str, full_transactions: bool = False) -> dict | None:
        return _object_or_none(
            self.call("eth_getBlockByHash", [_checked_hash(block_hash), full_transactions]), "eth_getBlockByHash"
        )

    def transfer_logs(self, from_block: int | str, to_block: int | str, addresses: Sequence[str] = ()) -> list[dict]:
        """Every log of the blocks from_block..to_block (inclusive) whose topic0 is Transfer, ERC-721's too."""
        query = {"fromBlock": block_parameter(from_block), "toBlock": block_parameter(to_block)}
        return self.logs({**query, "topics": [TRANSFER_TOPIC], **_address_filter(addresses)})

    def transfer_logs_of_block(self, block_hash: str, addresses: Sequence[str] = ()) -> list[dict]:
        """The Transfer logs of the block with this hash (EIP-234), wherever it is in the chain: a
        reorganization cannot swap its logs for another block's, as a range by number could."""
        query = {"blockHash": _checked_hash(block_hash), "topics": [TRANSFER_TOPIC], **_address_filter(addresses)}
        return self.logs(query)

    def logs(self, log_filter: dict) -> list[dict]:
        result = self.call("eth_getLogs", [log_filter])
        if not isinstance(result, list) or not all(isinstance(entry, dict) for entry in result):
            raise MalformedResponse(f"eth_getLogs from {self.where}: the result is not a list of log objects")
        return result

    # -- JSON-RPC ----------------------------------------------------------------------------------

    def call(self, method: str, params: list):
        """One request's result."""
        request_id = next(self._ids)
        request = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}

        def read(answer):
            return _result_of(answer, request_id, method, self.where)

        return self._exchange(request, read, method)

    def batch(self, calls: Sequence[tuple[str, list]]) -> list:
        """The results of several requests, in their order, sent ``batch_size`` to an HTTP request."""
        results: list = []
        for start in range(0, len(calls), self.batch_size):
            part = calls[start : start + self.batch_size]
            ids = [next(self._ids) for _ in part]
            requests = [
                {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
                for request_id, (method, params) in zip(ids, part)
            ]

            def read(answer, ids=ids, part=part):
                return _batch_results(answer, ids, [method for method, _ in part], self.where)

            results += self._exchange(requests, read, f"a batch of {len(part)} ({part[0][0]}, ...)")
        return results

    def _exchange(self, body, read: Callable, what: str):
        """POST ``body`` and ``read`` the JSON answer, retrying what a retry may change."""
        encoded = json.dumps(body).encode()
        problem, payload, malformed = "no attempt made", b"", False
        for attempt in range(self.attempts):
            try:
                response = self._http.post(self.url, content=encoded)
            except httpx.TransportError as error:  # refused, reset, timed out, DNS
                problem, malformed = f"{type(error).__name__}: {str(error) or 'no detail'}", False
            except httpx.InvalidURL as error:
                raise InvalidRpcUrl(f"bad node URL {self.where}: {error}") from None
            else:
                payload = response.content
                status = response.status_code
                if status in RETRYABLE_STATUS or status >= 500:
                    problem, malformed = f"HTTP {status} {_excerpt(payload)}", False
                elif status >= 400 and not _looks_like_json(payload):
                    raise NodeError(
                        f"{what} to {self.where}: HTTP {status} {_excerpt(payload)}", http_status=status
                    ) from None
                else:
                    try:
                        answer = json.loads(payload)
                    except (ValueError, RecursionError) as error:  # RecursionError: nested too deeply
                        problem, malformed = f"the answer is not JSON ({error}): {_excerpt(payload)}", True
                    else:
                        try:
                            return read(answer)
                        except MalformedResponse as error:
                            problem, malformed = str(error), True
            if attempt + 1 < self.attempts:
                wait = self._backoff.delay(attempt)
                log.info(
                    "%s to %s failed (%s); retry %d/%d in %.1f s",
                    what,
                    self.where,
                    problem,
                    attempt + 1,
                    self.attempts - 1,
                    wait,
                )
                if self.on_retry is not None:
                    self.on_retry(attempt + 1, problem)
                time.sleep(wait)
        message = f"{what} to {self.where}: gave up after {self.attempts} attempts: {problem}"
        if malformed:
            raise MalformedResponse(message, payload)
        raise NodeUnreachable(message)


def _looks_like_json(payload: bytes) -> bool:
    return payload.lstrip()[:1] in (b"{", b"[")


def _excerpt(payload: bytes, limit: int = 120) -> str:
    text = payload.decode("utf-8", "replace").replace("\n", " ").strip()
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _result_of(answer, request_id: int, method: str, where: str):
    """The result of one JSON-RPC response object; NodeError for an error object. An error about
    the request as a whole (it could not be parsed) has a null id."""
    if not isinstance(answer, dict):
        raise MalformedResponse(f"{method} from {where}: the answer is not a JSON-RPC response object")
    if answer.get("jsonrpc") != "2.0":
        raise MalformedResponse(f"{method} from {where}: the answer is not JSON-RPC 2.0")
    response_id = answer.get("id")
    if not (_is_id(response_id) and response_id == request_id) and not ("error" in answer and response_id is None):
        raise MalformedResponse(f"{method} from {where}: the answer's id {response_id!r} is not {request_id}")
    if ("result" in answer) == ("error" in answer):
        which = "both" if "result" in answer else "neither"
        raise MalformedResponse(f"{method} from {where}: the answer has {which} a result and an error")
    if "error" in answer:
        error = answer["error"]
        if not isinstance(error, dict) or not _is_id(error.get("code")):
            raise MalformedResponse(f"{method} from {where}: the error is not a JSON-RPC error object")
        message = str(error.get("message", "")).replace("\n", " ")[:300]
        raise NodeError(f"{method} from {where}: node error {error['code']}: {message}", code=error["code"])
    return answer["result"]


def _batch_results(answer, ids: list[int], methods: list[str], where: str) -> list:
    """The results of a batch answer, matched by request id. A node refusing the whole batch (too
    large, say) answers with one error object instead of a list: that error is raised."""
    what = f"a batch of {len(ids)} ({methods[0]}, ...)"
    if isinstance(answer, dict) and "error" in answer and answer.get("id") is None:
        _result_of(answer, -1, what, where)
    if not isinstance(answer, list):
        raise MalformedResponse(f"{what} from {where}: the answer is not a list of responses")
    by_id: dict = {}
    for response in answer:
        response_id = response.get("id") if isinstance(response, dict) else None
        if not _is_id(response_id) or response_id in by_id or response_id not in ids:
            raise MalformedResponse(f"{what} from {where}: an answer with id {response_id!r} that was not asked once")
        by_id[response_id] = response
    if len(by_id) != len(ids):
        raise MalformedResponse(f"{what} from {where}: {len(ids) - len(by_id)} of {len(ids)} requests got no answer")
    return [_result_of(by_id[request_id], request_id, method, where) for request_id, method in zip(ids, methods)]


def _object_or_none(result, method: str):
    if result is not None and not isinstance(result, dict):
        raise MalformedResponse(f"{method}: the result is neither an object nor null")
    return result


def _checked_hash(block_hash: str) -> str:
    if not isinstance(block_hash, str) or not _HASH.fullmatch(block_hash):
        raise ValueError(f"{block_hash!r} is not a 32-byte hash (0x and 64 hex digits)")
    return block_hash.lower()


def _address_filter(addresses: Sequence[str]) -> dict:
    for address in addresses:
        if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
            raise ValueError(f"{address!r} is not an address (0x and 40 hex digits)")
    return {"address": [a.lower() for a in addresses]} if addresses else {}


# -- node JSON -> contract rows --------------------------------------------------------------------


def parse_quantity(value, name: str, limit: int = 2**256) -> int:
    """A JSON-RPC quantity (0x-prefixed hex) as an int below ``limit``."""
    if not isinstance(value, str) or not _QUANTITY.fullmatch(value):
        raise MalformedResponse(f"{name} {value!r} is not a hex quantity")
    number = int(value, 16)
    if number >= limit:
        raise MalformedResponse(f"{name} {value} is too large")
    return number


def _field(record: dict, name: str, pattern: re.Pattern, what: str, reason: str = "malformed") -> str:
    value = record.get(name)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise UnreadableRecord(reason, f"{name} {value!r} is not {what}")
    return value.lower()


def _quantity(record: dict, name: str, limit: int = INT64_MAX + 1) -> int:
    try:
        return parse_quantity(record.get(name), name, limit)
    except MalformedResponse as error:
        raise UnreadableRecord("malformed", str(error)) from None


def block_row(block: dict, status: str = "latest") -> dict:
    """A node block (``eth_getBlockBy*``) as a ``schemas/block.avsc`` row."""
    if not isinstance(block, dict):
        raise UnreadableRecord("malformed", "the block is not a JSON object")
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    transactions = block.get("transactions")
    if not isinstance(transactions, list):
        raise UnreadableRecord("malformed", "transactions is not a list")
    timestamp = _quantity(block, "timestamp", INT64_MAX // 1_000_000 + 1)  # event_time fits int64
    base_fee = None if block.get("baseFeePerGas") is None else _quantity(block, "baseFeePerGas")
    return {
        "chain": CHAIN,
        "number": _quantity(block, "number"),
        "hash": _field(block, "hash", _HASH, "a 32-byte hash"),
        "parent_hash": _field(block, "parentHash", _HASH, "a 32-byte hash"),
        "timestamp": timestamp,
        "miner": _field(block, "miner", _ADDRESS, "an address"),
        "gas_used": _quantity(block, "gasUsed"),
        "gas_limit": _quantity(block, "gasLimit"),
        "base_fee_per_gas": base_fee,
        "transaction_count": len(transactions),
        "event_time": timestamp * 1_000_000,
        "status": status,
        "retracted": False,
    }


def transfer_row(entry: dict, block_timestamp: int, status: str = "latest") -> dict:
    """An ERC-20 Transfer log (``eth_getLogs``) as a ``schemas/token_transfer.avsc`` row; its block's
    timestamp comes from the block, as a log does not carry it."""
    if not isinstance(entry, dict):
        raise UnreadableRecord("malformed", "the log is not a JSON object")
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    if entry.get("removed") is True:
        raise UnreadableRecord("removed_log", "the node marks the log removed: its block left the chain")
    topics = entry.get("topics")
    if not isinstance(topics, list) or not all(isinstance(t, str) and _HASH.fullmatch(t) for t in topics):
        raise UnreadableRecord("malformed", "topics is not a list of 32-byte hex words")
    if not topics or topics[0].lower() != TRANSFER_TOPIC:
        raise UnreadableRecord("not_erc20_transfer", "topic0 is not Transfer(address,address,uint256)")
    if len(topics) != 3:
        raise UnreadableRecord(
            "not_erc20_transfer", f"a Transfer log with {len(topics)} topics, not 3 (ERC-721 indexes the token id)"
        )
    data = _field(entry, "data", _DATA, "hex data")
    if len(data) != 2 + 64:
        raise UnreadableRecord("not_erc20_transfer", f"{(len(data) - 2) // 2} bytes of data, not the 32 of a value")
    sender, receiver = (_ADDRESS_TOPIC.fullmatch(topic) for topic in topics[1:])
    if sender is None or receiver is None:
        raise UnreadableRecord("not_erc20_transfer", "topic1 or topic2 is not an address padded to 32 bytes")
    block_hash = _field(entry, "blockHash", _HASH, "a 32-byte hash")
    log_index = _quantity(entry, "logIndex")
    return {
        "chain": CHAIN,
        "token_address": _field(entry, "address", _ADDRESS, "an address"),
        "from_address": "0x" + sender.group(1).lower(),
        "to_address": "0x" + receiver.group(1).lower(),
        "value": str(int(data, 16)),
        "transaction_hash": _field(entry, "transactionHash", _HASH, "a 32-byte hash"),
        "log_index": log_index,
        "block_number": _quantity(entry, "blockNumber"),
        "block_hash": block_hash,
        "block_timestamp": block_timestamp,
        "event_time": block_timestamp * 1_000_000,
        "transfer_id": f"{block_hash}_{log_index}",
        "status": status,
        "retracted": False,
    }


def record_dead_letter(error: UnreadableRecord, record, source: str, block_number=None, block_timestamp=None) -> dict:
    """The dead letter of a block or log that could not become a row: the node's JSON as its payload,
    the block number as its offset in the source."""
    return dead_letter(
        error.reason,
        str(error),
        "parse",
        record,
        source,
        _offset(block_number),
        exchange=CHAIN,
        event_time=None if block_timestamp is None else block_timestamp * 1_000_000,
    )


def _offset(block_number):
    if isinstance(block_number, int):
        return block_number
    try:
        return parse_quantity(block_number, "blockNumber", INT64_MAX + 1)
    except MalformedResponse:
        return None


def block_rows(blocks: Iterable[dict], source: str, status: str = "latest") -> tuple[list[dict], list[dict]]:
    """(rows, dead letters) of node blocks."""
    rows, dead = [], []
    for block in blocks:
        try:
            rows.append(block_row(block, status))
        except UnreadableRecord as error:
            number = block.get("number") if isinstance(block, dict) else None
            dead.append(record_dead_letter(error, block, source, number))
    return rows, dead


def transfer_rows(
    logs: Iterable[dict], timestamps: dict[str, int], source: str, status: str = "latest"
) -> tuple[list[dict], list[dict]]:
    """(rows, dead letters) of Transfer logs; ``timestamps`` maps block hash (lower case) to block
    timestamp. The caller reads the logs' blocks first, so a log of another block is malformed."""
    rows, dead = [], []
    for entry in logs:
        block_hash = entry.get("blockHash") if isinstance(entry, dict) else None
        block_timestamp = timestamps.get(block_hash.lower()) if isinstance(block_hash, str) else None
        try:
            if block_timestamp is None:
                raise UnreadableRecord("malformed", f"blockHash {block_hash!r} is not a block of this read")
            rows.append(transfer_row(entry, block_timestamp, status))
        except UnreadableRecord as error:
            number = entry.get("blockNumber") if isinstance(entry, dict) else None
            dead.append(record_dead_letter(error, entry, source, number, block_timestamp))
    return rows, dead
