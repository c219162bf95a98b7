"""Token activity and exchange flows of one (chain, token, window), as a mergeable partial.

A deduplicated chunk of a chain's transfers is summarized in bulk, per token, into
``TokenWindow``s: numpy group-bys over the chunk's columns, so the runner then moves and merges
one small value per (token, window) rather than transfers. Partials merge by addition, so a
window's panes, however its transfers were batched, give the same result.

**Exact sums.** Values are uint256: each is cut into nine base-10**9 limbs, limbs are summed in
int64 (exact for up to 9 * 10**9 transfers) and the sums become one Python integer per group.

**Retractions.** A retraction withdraws the transfer with the same ``transfer_id`` (its block was
orphaned). A partial keeps the ids of its transfers and the retractions themselves (reorgs are
rare, so they are few); ``settle`` takes each withdrawn transfer back out of the counts, the sums,
the sender and receiver multisets and the flows. With accumulating panes a retraction withdraws
only a transfer of the same window it has seen; one it has not seen (``unmatched``) withdraws
nothing. With discarding panes, each pane is a change to the ones before, so every retraction
withdraws its transfer (seen in an earlier pane).

Beam-free: plain numpy and Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.arrow_arrays import one_array
from transforms.chain_spec import ChainSpec, LabelIndex, Token
from transforms.token_transfers import address_bytes, limbs_value, transfer_hashes, value_limbs

_NO_ADDRESSES = np.zeros(0, "S20")
_NO_COUNTS = np.zeros(0, np.int64)
_NO_IDS = np.zeros(0, np.uint64)
_ENTITY_FIELDS = 4  # inflow value, outflow value, inflow count, outflow count


_ARRAYS = (
    "senders",
    "sender_counts",
    "receivers",
    "receiver_counts",
    "transfer_ids",
    "retracted_ids",
    "retracted_senders",
    "retracted_receivers",
)


def _window_from_pickle(count, value, flows, retracted_values, buffer, layout) -> "TokenWindow":
    arrays, position = [], 0
    for dtype, length in layout:
        dtype = np.dtype(dtype)
        arrays.append(np.frombuffer(buffer, dtype, length, position))
        position += dtype.itemsize * length
    return TokenWindow(count, value, flows=flows, retracted_values=retracted_values, **dict(zip(_ARRAYS, arrays)))


@dataclass
class TokenWindow:
    """What one token's transfers of one window add up to, mergeable. It crosses a shuffle once
    per (token, window), so it pickles its arrays as one buffer."""

    count: int = 0
    value: int = 0
    senders: np.ndarray = field(default_factory=lambda: _NO_ADDRESSES)
    """Distinct senders, sorted, with ``sender_counts``: the transfers from each."""
    sender_counts: np.ndarray = field(default_factory=lambda: _NO_COUNTS)
    receivers: np.ndarray = field(default_factory=lambda: _NO_ADDRESSES)
    receiver_counts: np.ndarray = field(default_factory=lambda: _NO_COUNTS)
    transfer_ids: np.ndarray = field(default_factory=lambda: _NO_IDS)
    """Hashes of the transfers' ids: what a retraction is matched with."""
    flows: dict = field(default_factory=dict)
    """entity -> [inflow value, outflow value, inflow count, outflow count]."""
    retracted_ids: np.ndarray = field(default_factory=lambda: _NO_IDS)
    retracted_values: list = field(default_factory=list)
    retracted_senders: np.ndarray = field(default_factory=lambda: _NO_ADDRESSES)
    retracted_receivers: np.ndarray = field(default_factory=lambda: _NO_ADDRESSES)

    def __reduce__(self):
        arrays = [np.ascontiguousarray(getattr(self, name)) for name in _ARRAYS]
        layout = tuple((a.dtype.str, len(a)) for a in arrays)
        buffer = b"".join(a.data for a in arrays)
        return _window_from_pickle, (self.count, self.value, self.flows, self.retracted_values, buffer, layout)


@dataclass(frozen=True)
class SettledWindow:
    """A window's canonical figures: its transfers less those withdrawn."""

    transfer_count: int
    value: int
    unique_senders: int
    unique_receivers: int
    retracted_count: int
    """Retraction records, plus the transfers they withdrew."""
    unmatched_retractions: int
    flows: dict
    """entity -> (inflow value, outflow value, inflow count, outflow count)."""


def _segments(sorted_codes: np.ndarray) -> np.ndarray:
    """Start of each run of equal values in a sorted array."""
    return np.r_[0, np.flatnonzero(np.diff(sorted_codes)) + 1] if len(sorted_codes) else np.zeros(0, np.int64)


def _multisets(codes: np.ndarray, addresses: np.ndarray, groups: int):
    """Per group code: (distinct addresses sorted, their counts)."""
    keyed = np.empty(len(codes), dtype=[("code", ">u4"), ("address", "V20")])
    keyed["code"] = codes
    keyed["address"] = addresses.view("V20")
    combined = keyed.view("S24")
    distinct, counts = np.unique(combined, return_counts=True)
    # np.unique sorts S24 by its bytes: big-endian code first, then the address.
    distinct_bytes = np.ascontiguousarray(distinct).view(np.uint8).reshape(-1, 24)
    distinct_codes = distinct_bytes[:, :4].copy().view(">u4").ravel().astype(np.int64)
    distinct_addresses = np.ascontiguousarray(distinct_bytes[:, 4:]).view("S20").ravel()
    bounds = np.searchsorted(distinct_codes, np.arange(groups + 1))
    return [
        (distinct_addresses[bounds[g] : bounds[g + 1]], counts[bounds[g] : bounds[g + 1]].astype(np.int64))
        for g in range(groups)
    ]


def _grouped_values(codes: np.ndarray, limbs: np.ndarray, groups: int) -> list[int]:
    """The exact value sum of each group code."""
    order = np.argsort(codes, kind="stable")
    sums = np.zeros((groups, limbs.shape[1]), np.int64)
    if len(order):
        starts = _segments(codes[order])
        sums[codes[order][starts]] = np.add.reduceat(limbs[order], starts, axis=0)
    return [limbs_value(row) for row in sums]


def summarize(records: pa.Table, labels: LabelIndex | None) -> dict[str, TokenWindow]:
    """One window's deduplicated transfers of one chain (``token_transfers.RECORD_SCHEMA``) ->
    {token address: its partial}, computed for all tokens at once."""
    if not records.num_rows:
        return {}
    encoded = one_array(pc.dictionary_encode(records.column("token_address")))
    token_names = encoded.dictionary.to_pylist()
    token_codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    groups = len(token_names)
    retracted = records.column("retracted").to_numpy().astype(bool)
    senders = address_bytes(records.column("from_address"))
    receivers = address_bytes(records.column("to_address"))
    transfer_ids, _, _ = transfer_hashes(records)
    original = ~retracted
    codes = token_codes[original]
    limbs = value_limbs(records.column("value").filter(pa.array(original)))
    counts = np.bincount(codes, minlength=groups)
    values = _grouped_values(codes, limbs, groups)
    sent = _multisets(codes, senders[original], groups)
    received = _multisets(codes, receivers[original], groups)
    id_order = np.argsort(codes, kind="stable")
    id_bounds = np.searchsorted(codes[id_order], np.arange(groups + 1))
    ids = transfer_ids[original][id_order]
    windows = {
        str(name): TokenWindow(
            int(counts[g]),
            values[g],
            *sent[g],
            *received[g],
            ids[id_bounds[g] : id_bounds[g + 1]].copy(),
        )
        for g, name in enumerate(token_names)
    }
    if labels is not None:
        _add_flows(windows, token_names, codes, senders[original], receivers[original], limbs, labels)
    if retracted.any():
        _add_retractions(windows, token_names, token_codes, retracted, records, transfer_ids, senders, receivers)
    return windows


def _add_flows(windows, token_names, codes, senders, receivers, limbs, labels: LabelIndex) -> None:
    """Into and out of each labelled entity, per token: a transfer within one entity is no flow."""
    from_entity, to_entity = labels.entities_of(senders), labels.entities_of(receivers)
    entities = len(labels.entities)
    for direction, entity, mask in (
        (0, to_entity, (to_entity >= 0) & (to_entity != from_entity)),
        (1, from_entity, (from_entity >= 0) & (from_entity != to_entity)),
    ):
        if not mask.any():
            continue
        keys = codes[mask] * entities + entity[mask]
        distinct, key_codes = np.unique(keys, return_inverse=True)
        sums = _grouped_values(key_codes, limbs[mask], len(distinct))
        flow_counts = np.bincount(key_codes, minlength=len(distinct))
        for k, key in enumerate(distinct.tolist()):
            token, name = str(token_names[key // entities]), labels.entities[key % entities]
            flows = windows[token].flows.setdefault(name, [0] * _ENTITY_FIELDS)
            flows[direction] += sums[k]
            flows[2 + direction] += int(flow_counts[k])


def _add_retractions(windows, token_names, token_codes, retracted, records, transfer_ids, senders, receivers) -> None:
    rows = np.flatnonzero(retracted)
    values = records.column("value").take(pa.array(rows, pa.int64())).to_pylist()
    for k, row in enumerate(rows.tolist()):
        window = windows[str(token_names[token_codes[row]])]
        window.retracted_ids = np.append(window.retracted_ids, transfer_ids[row])
        window.retracted_values = [*window.retracted_values, int(values[k])]
        window.retracted_senders = np.append(window.retracted_senders, senders[row : row + 1])
        window.retracted_receivers = np.append(window.retracted_receivers, receivers[row : row + 1])


def _merged_multiset(addresses: list[np.ndarray], counts: list[np.ndarray]):
    if len(addresses) == 1:
        return addresses[0], counts[0]
    everything = np.concatenate(addresses)
    distinct, inverse = np.unique(everything, return_inverse=True)
    return distinct, np.bincount(inverse, weights=np.concatenate(counts), minlength=len(distinct)).astype(np.int64)


def merge(windows: list[TokenWindow]) -> TokenWindow:
    """The partial of all the given partials' transfers."""
    if len(windows) == 1:
        return windows[0]
    flows: dict = {}
    for window in windows:
        for entity, figures in window.flows.items():
            total = flows.setdefault(entity, [0] * _ENTITY_FIELDS)
            for k in range(_ENTITY_FIELDS):
                total[k] += figures[k]
    return TokenWindow(
        sum(w.count for w in windows),
        sum(w.value for w in windows),
        *_merged_multiset([w.senders for w in windows], [w.sender_counts for w in windows]),
        *_merged_multiset([w.receivers for w in windows], [w.receiver_counts for w in windows]),
        np.concatenate([w.transfer_ids for w in windows]),
        flows,
        np.concatenate([w.retracted_ids for w in windows]),
        [value for w in windows for value in w.retracted_values],
        np.concatenate([w.retracted_senders for w in windows]),
        np.concatenate([w.retracted_receivers for w in windows]),
    )


def _distinct_after_withdrawing(addresses: np.ndarray, counts: np.ndarray, withdrawn: np.ndarray) -> int:
    if not len(withdrawn):
        return int(np.count_nonzero(counts > 0))
    remaining = counts.copy()
    at = np.minimum(np.searchsorted(addresses, withdrawn), max(len(addresses) - 1, 0))
    present = (addresses[at] == withdrawn) if len(addresses) else np.zeros(len(withdrawn), bool)
    np.subtract.at(remaining, at[present], 1)
    return int(np.count_nonzero(remaining > 0))


def settle(window: TokenWindow, labels: LabelIndex | None, withdraw_unseen: bool = False) -> SettledWindow:
    """The window's canonical figures. ``withdraw_unseen``: every retraction withdraws its transfer
    even if this partial never saw it (discarding panes: it was in an earlier pane)."""
    retractions = len(window.retracted_ids)
    if not retractions:  # the usual window: nothing withdrawn
        return SettledWindow(
            window.count,
            window.value,
            int(np.count_nonzero(window.sender_counts)),
            int(np.count_nonzero(window.receiver_counts)),
            0,
            0,
            {entity: tuple(figures) for entity, figures in window.flows.items()},
        )
    if withdraw_unseen:
        withdrawn = np.ones(retractions, bool)
    else:
        withdrawn = np.isin(window.retracted_ids, window.transfer_ids)
    rows = np.flatnonzero(withdrawn)
    withdrawn_value = sum(window.retracted_values[i] for i in rows.tolist())
    flows = {entity: list(figures) for entity, figures in window.flows.items()}
    if labels is not None and len(rows):
        from_entity = labels.entities_of(window.retracted_senders[rows])
        to_entity = labels.entities_of(window.retracted_receivers[rows])
        for k, i in enumerate(rows.tolist()):
            value = window.retracted_values[i]
            source, target = int(from_entity[k]), int(to_entity[k])
            if target >= 0 and target != source:
                figures = flows.setdefault(labels.entities[target], [0] * _ENTITY_FIELDS)
                figures[0] -= value
                figures[2] -= 1
            if source >= 0 and source != target:
                figures = flows.setdefault(labels.entities[source], [0] * _ENTITY_FIELDS)
                figures[1] -= value
                figures[3] -= 1
    return SettledWindow(
        window.count - len(rows),
        window.value - withdrawn_value,
        _distinct_after_withdrawing(window.senders, window.sender_counts, window.retracted_senders[rows]),
        _distinct_after_withdrawing(window.receivers, window.receiver_counts, window.retracted_receivers[rows]),
        retractions + len(rows),
        retractions - len(rows),
        {entity: tuple(figures) for entity, figures in flows.items()},
    )


def scaled(raw: int, token: Token | None) -> float | None:
    """An exact amount in a token's smallest unit, in whole tokens, correctly rounded; None when
    the token's decimals are unknown."""
    if token is None or token.decimals is None:
        return None
    return float(Fraction(raw, 10**token.decimals))


def token_fields(chain_spec: ChainSpec, chain: str, address: str) -> dict:
    token = chain_spec.token(chain, address)
    known = token is not None and token.decimals is not None
    return {
        "token_address": address,
        "token_symbol": None if token is None else token.symbol,
        "decimals": None if token is None else token.decimals,
        "token_known": known,
    }


def activity_fields(settled: SettledWindow, token: Token | None) -> dict:
    return {
        "transfer_count": settled.transfer_count,
        "volume_raw": str(settled.value),
        "volume": scaled(settled.value, token),
        "unique_senders": settled.unique_senders,
        "unique_receivers": settled.unique_receivers,
        "retracted_count": settled.retracted_count,
        "unmatched_retractions": settled.unmatched_retractions,
    }


def flow_fields(figures: tuple, token: Token | None) -> dict:
    inflow, outflow, inflow_count, outflow_count = figures
    return {
        "inflow_count": inflow_count,
        "outflow_count": outflow_count,
        "inflow_raw": str(inflow),
        "outflow_raw": str(outflow),
        "netflow_raw": str(inflow - outflow),
        "inflow": scaled(inflow, token),
        "outflow": scaled(outflow, token),
        "netflow": scaled(inflow - outflow, token),
    }
