"""Token activity and exchange flows of one (chain, token, window), as a mergeable partial.

A deduplicated chunk of a chain's transfers is summarized in bulk, per token, into
``TokenWindow``s: numpy group-bys over the chunk's columns, so the runner then moves and merges
one small value per (token, window) rather than transfers. Partials merge by addition, so a
window's panes, however its transfers were batched, give the same result.

**Exact sums.** Values are uint256: each is cut into nine base-10**9 limbs, limbs are summed in
int64 (exact for up to 9 * 10**9 transfers) and the sums become one Python integer per group.

**Retractions.** A retraction withdraws the transfer with the same ``transfer_id`` and
``publication`` (its block was orphaned). A block a later reorg restores is published again under
the next publication number: a new transfer that an earlier retraction does not withdraw, so a
reorg back and forth (A, B, A again) leaves A's transfers counted once. A partial keeps the ids
of its transfers and the retractions themselves (reorgs are rare, so they are few); ``settle``
takes each withdrawn transfer back out of the counts, the sums, the sender and receiver
multisets and the flows. With accumulating panes a retraction withdraws only a transfer of the
same window it has seen; one it has not seen (``unmatched``) withdraws nothing. With discarding
panes, each pane is a change to the ones before, so every retraction withdraws its transfer (seen
in an earlier pane).

Beam-free: plain numpy and Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from transforms.arrow_arrays import one_array
from transforms.chain_spec import ChainSpec, LabelIndex, Token
from transforms.token_transfers import RETRACTION_MASK, address_bytes, limbs_value, transfer_hashes, value_limbs

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


_ADDRESS, _COUNT, _ID = np.dtype("S20"), np.dtype(np.int64), np.dtype(np.uint64)
_ARRAY_TYPES = (_ADDRESS, _COUNT, _ADDRESS, _COUNT, _ID, _ID, _ADDRESS, _ADDRESS)  # as _ARRAYS


def _window_from_pickle(count, value, flows, retracted_values, buffer, lengths) -> "TokenWindow":
    arrays, position = [], 0
    for dtype, length in zip(_ARRAY_TYPES, lengths):
        arrays.append(np.frombuffer(buffer, dtype, length, position))
        position += dtype.itemsize * length
    senders, sender_counts, receivers, receiver_counts, ids, retracted_ids, retracted_from, retracted_to = arrays
    return TokenWindow(
        count,
        value,
        senders,
        sender_counts,
        receivers,
        receiver_counts,
        ids,
        flows,
        retracted_ids,
        retracted_values,
        retracted_from,
        retracted_to,
    )


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
    """Hashes of the transfers' (transfer_id, publication): what a retraction is matched with."""
    flows: dict = field(default_factory=dict)
    """entity -> [inflow value, outflow value, inflow count, outflow count]."""
    retracted_ids: np.ndarray = field(default_factory=lambda: _NO_IDS)
    retracted_values: list = field(default_factory=list)
    retracted_senders: np.ndarray = field(default_factory=lambda: _NO_ADDRESSES)
    retracted_receivers: np.ndarray = field(default_factory=lambda: _NO_ADDRESSES)

    def __reduce__(self):
        arrays = [np.ascontiguousarray(getattr(self, name), dtype=dtype) for name, dtype in zip(_ARRAYS, _ARRAY_TYPES)]
        buffer = b"".join(a.data for a in arrays)
        lengths = tuple(len(a) for a in arrays)
        return _window_from_pickle, (self.count, self.value, self.flows, self.retracted_values, buffer, lengths)


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


def _multisets(codes: np.ndarray, addresses: pa.Array, bounds: np.ndarray):
    """Per group code (``bounds`` from ``np.searchsorted`` of the sorted codes): (its distinct
    addresses as 20-byte values, in no particular order, with how often each occurs)."""
    counted = (
        pl.DataFrame({"code": codes, "address": pl.from_arrow(one_array(addresses))})
        .group_by("code", "address")
        .len()
        .sort("code")
    )
    distinct_codes = counted["code"].to_numpy()
    distinct = address_bytes(counted["address"].to_arrow())
    counts = counted["len"].to_numpy().astype(np.int64)
    at = np.searchsorted(distinct_codes, np.arange(len(bounds)))
    return [(distinct[at[g] : at[g + 1]], counts[at[g] : at[g + 1]]) for g in range(len(bounds) - 1)]


def _grouped_values(sorted_limbs: np.ndarray, bounds: np.ndarray) -> list[int]:
    """The exact value sum of each group of rows sorted by group (``bounds``: each group's first row)."""
    groups = len(bounds) - 1
    sums = np.zeros((groups, sorted_limbs.shape[1]), np.int64)
    present = np.flatnonzero(np.diff(bounds))
    if len(present):
        sums[present] = np.add.reduceat(sorted_limbs, bounds[present], axis=0)
    return [limbs_value(row) for row in sums]


def transfer_ids_of(records: pa.Table, id_hash: np.ndarray | None = None) -> np.ndarray:
    """Each row's transfer id hash: from dedupe's id hashes (a retraction's flipped back) when given."""
    if id_hash is None:
        return transfer_hashes(records)[0]
    retracted = records.column("retracted").to_numpy().astype(bool)
    return np.where(retracted, id_hash ^ RETRACTION_MASK, id_hash)


def summarize(
    records: pa.Table, labels: LabelIndex | None, id_hash: np.ndarray | None = None
) -> dict[str, TokenWindow]:
    """One window's deduplicated transfers of one chain (``token_transfers.RECORD_SCHEMA``, with
    dedupe's ``id_hash`` per row if known) -> {token address: its partial}, for all tokens at once."""
    if not records.num_rows:
        return {}
    transfer_ids = transfer_ids_of(records, id_hash)
    retracted = records.column("retracted").to_numpy().astype(bool)
    originals = records.filter(pa.array(~retracted)) if retracted.any() else records
    encoded = one_array(pc.dictionary_encode(records.column("token_address")))
    token_names = encoded.dictionary.to_pylist()
    token_codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    codes = token_codes[~retracted]
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(token_names) + 1))
    limbs = value_limbs(originals.column("value"))
    values = _grouped_values(limbs[order], bounds)
    sent = _multisets(codes, originals.column("from_address"), bounds)
    received = _multisets(codes, originals.column("to_address"), bounds)
    ids = transfer_ids[~retracted][order]
    windows = {
        name: TokenWindow(
            int(bounds[g + 1] - bounds[g]),
            values[g],
            *sent[g],
            *received[g],
            ids[bounds[g] : bounds[g + 1]],
        )
        for g, name in enumerate(token_names)
    }
    if labels is not None:
        _add_flows(windows, token_names, codes, originals, limbs, labels)
    if retracted.any():
        _add_retractions(windows, token_names, token_codes, retracted, records, transfer_ids)
    return windows


def _add_flows(windows, token_names, codes, originals: pa.Table, limbs, labels: LabelIndex) -> None:
    """Into and out of each labelled entity, per token: a transfer within one entity is no flow."""
    from_entity = labels.entities_of_text(originals.column("from_address"))
    to_entity = labels.entities_of_text(originals.column("to_address"))
    entities = len(labels.entities)
    for direction, entity, mask in (
        (0, to_entity, (to_entity >= 0) & (to_entity != from_entity)),
        (1, from_entity, (from_entity >= 0) & (from_entity != to_entity)),
    ):
        if not mask.any():
            continue
        keys = codes[mask] * entities + entity[mask]
        distinct, key_codes = np.unique(keys, return_inverse=True)
        order = np.argsort(key_codes, kind="stable")
        bounds = np.searchsorted(key_codes[order], np.arange(len(distinct) + 1))
        sums = _grouped_values(limbs[mask][order], bounds)
        for k, key in enumerate(distinct.tolist()):
            token, name = token_names[key // entities], labels.entities[key % entities]
            flows = windows[token].flows.setdefault(name, [0] * _ENTITY_FIELDS)
            flows[direction] += sums[k]
            flows[2 + direction] += int(bounds[k + 1] - bounds[k])


def _add_retractions(windows, token_names, token_codes, retracted, records, transfer_ids) -> None:
    rows = np.flatnonzero(retracted)
    picked = records.take(pa.array(rows, pa.int64()))
    values = picked.column("value").to_pylist()
    senders, receivers = address_bytes(picked.column("from_address")), address_bytes(picked.column("to_address"))
    for k, row in enumerate(rows.tolist()):
        window = windows.setdefault(token_names[token_codes[row]], TokenWindow())
        window.retracted_ids = np.append(window.retracted_ids, transfer_ids[row])
        window.retracted_values = [*window.retracted_values, int(values[k])]
        window.retracted_senders = np.append(window.retracted_senders, senders[k : k + 1])
        window.retracted_receivers = np.append(window.retracted_receivers, receivers[k : k + 1])


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
    order = np.argsort(addresses, kind="stable")
    addresses, remaining = addresses[order], counts[order]
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
