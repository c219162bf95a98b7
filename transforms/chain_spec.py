"""What a run computes from on-chain records: the tokens it knows, the address labels its exchange
flows are by, and which market series it fuses with which asset's on-chain activity.

The tables arrive here as plain values (``io_connectors.tokens`` and ``io_connectors.address_labels``
read the files); nothing here reads a file. Beam-free: ``BarSpec`` carries it as the command line plans.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.token_transfers import address_bytes

FUSION_TABLES = ("bars", "bars_consolidated")
"""Market tables a fusion can take its series from."""


@dataclass(frozen=True)
class Token:
    chain: str
    address: str
    """0x + 40 lower-case hex digits."""
    symbol: str | None
    """As the token's contract spells it, e.g. WETH."""
    decimals: int | None
    asset: str | None = None
    """The canonical asset it is, as trading pairs name it (WETH is ETH); its symbol if not given."""

    @property
    def canonical_asset(self) -> str | None:
        return self.asset or self.symbol


@dataclass(frozen=True)
class Fusion:
    """One market series beside one asset's on-chain activity, window by window."""

    asset: str
    """Canonical asset, e.g. USDT or ETH: every known token that is it counts towards it (WETH for ETH)."""
    table: str
    """The market table: ``bars`` (an exchange's time bars) or ``bars_consolidated``."""
    exchange: str
    """The series' exchange (``consolidated`` for consolidated bars)."""
    symbol: str
    """The series' symbol (BTCUSDT; BTC/USDT for consolidated bars)."""

    def __post_init__(self):
        if self.table not in FUSION_TABLES:
            raise ValueError(f"a fusion takes its bars from {' or '.join(FUSION_TABLES)}, not {self.table!r}")


@dataclass(frozen=True)
class LabelIndex:
    """Labelled addresses as sorted 20-byte values, each with its entity's code."""

    addresses: np.ndarray
    entity_codes: np.ndarray
    entities: tuple[str, ...]
    texts: pa.Array
    """The same addresses as text (0x + 40 lower-case hex digits), in the same order."""

    def entities_of(self, addresses: np.ndarray) -> np.ndarray:
        """Each address's entity code, -1 where it has no label."""
        if not len(self.addresses):
            return np.full(len(addresses), -1, np.int32)
        at = np.minimum(np.searchsorted(self.addresses, addresses), len(self.addresses) - 1)
        return np.where(self.addresses[at] == addresses, self.entity_codes[at], -1).astype(np.int32)

    def entities_of_text(self, addresses) -> np.ndarray:
        """Each address (as text)'s entity code, -1 where it has no label."""
        position = pc.fill_null(pc.index_in(addresses, value_set=self.texts), -1).to_numpy(zero_copy_only=False)
        codes = np.append(self.entity_codes, np.int32(-1))  # position -1 picks the appended -1
        return codes[position].astype(np.int32)


@dataclass(frozen=True)
class ChainSpec:
    tokens: tuple[Token, ...] = ()
    labels: tuple[tuple[str, str], ...] | None = None
    """(address, entity) pairs; None: no exchange flows table."""
    fusions: tuple[Fusion, ...] = ()

    def __post_init__(self):
        if self.labels is not None:
            entities: dict[str, str] = {}
            for address, entity in self.labels:
                if entities.setdefault(address, entity) != entity:
                    raise ValueError(f"address {address} is labelled with two entities: {entities[address]}, {entity}")
        for fusion in self.fusions:
            if not self.asset_tokens(fusion.asset):
                raise ValueError(f"no known token is the asset {fusion.asset!r}: the tokens table has none")

    def settings(self) -> dict:
        """What a backfill's chunk manifest records of it: a resumed run with other tokens,
        labels or fusions is another run."""
        tokens = "\n".join(sorted(f"{t.chain},{t.address},{t.symbol},{t.decimals},{t.asset}" for t in self.tokens))
        labels = "\n".join(f"{address},{entity}" for address, entity in sorted(self.labels or ()))
        return {
            "tokens": hashlib.sha256(tokens.encode()).hexdigest()[:16],
            "labels": None if self.labels is None else hashlib.sha256(labels.encode()).hexdigest()[:16],
            "fusions": [f"{f.asset}={f.table}:{f.exchange}:{f.symbol}" for f in self.fusions],
        }

    @functools.cached_property
    def _tokens_by_address(self) -> dict[tuple[str, str], Token]:
        return {(token.chain, token.address): token for token in self.tokens}

    def token(self, chain: str, address: str) -> Token | None:
        return self._tokens_by_address.get((chain, address))

    def asset_tokens(self, asset: str) -> frozenset[tuple[str, str]]:
        """(chain, address) of every known token that is the asset (matched case-insensitively)."""
        return frozenset(
            (token.chain, token.address)
            for token in self.tokens
            if token.canonical_asset is not None and token.canonical_asset.upper() == asset.upper()
        )

    @functools.cached_property
    def label_index(self) -> LabelIndex | None:
        if self.labels is None:
            return None
        pairs = sorted(set(self.labels))
        entities = tuple(sorted({entity for _, entity in pairs}))
        code = {entity: k for k, entity in enumerate(entities)}
        texts = pa.array([address for address, _ in pairs], pa.string())
        raw = address_bytes(texts)
        order = np.argsort(raw, kind="stable")
        codes = np.array([code[entity] for _, entity in pairs], np.int32)
        return LabelIndex(raw[order], codes[order], entities, texts.take(pa.array(order, pa.int64())))
