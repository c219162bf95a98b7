"""The tables a run's on-chain computations take (``transforms.chain_spec.ChainSpec``): the tokens
(``io_connectors.tokens``: the shipped list and the user's ``--tokens`` file), the address labels
(``io_connectors.address_labels``, ``--labels``) and the fusions asked for on the command line
(``--fuse ASSET=bars:EXCHANGE:SYMBOL`` or ``ASSET=bars_consolidated:BASE/QUOTE``).
"""

from __future__ import annotations

from io_connectors.address_labels import LabelsError, read_labels_file
from io_connectors.tokens import TokensError, load_tokens
from transforms.chain_spec import FUSION_TABLES, ChainSpec, Fusion, Token


class ChainTableError(ValueError):
    """A tokens or labels file, or a fusion, that cannot be used: one line saying why."""


def parse_fusion(text: str) -> Fusion:
    """``USDT=bars:binance:BTCUSDT`` (an exchange's time bars) or ``USDT=bars_consolidated:BTC/USDT``."""
    asset, equals, series = text.partition("=")
    parts = series.split(":")
    if equals and asset and parts[0] == "bars_consolidated" and len(parts) == 2 and parts[1]:
        return Fusion(asset.upper(), "bars_consolidated", "consolidated", parts[1])
    if not equals or not asset or len(parts) != 3 or parts[0] not in FUSION_TABLES or not all(parts):
        raise ChainTableError(
            f"--fuse {text!r}: expected ASSET=bars:EXCHANGE:SYMBOL (e.g. USDT=bars:binance:BTCUSDT) "
            "or ASSET=bars_consolidated:BASE/QUOTE"
        )
    return Fusion(asset.upper(), parts[0], parts[1], parts[2])


def chain_spec_from_files(tokens_path: str | None = None, labels_path: str | None = None, fusions=()) -> ChainSpec:
    """The run's ``ChainSpec``: the shipped tokens extended by ``tokens_path``, the labelled
    addresses that name an entity (flows are between entities), and the fusions. One
    ChainTableError (one line) for an unusable file or fusion."""
    try:
        tokens = tuple(
            Token(t.chain, t.address, t.symbol, t.decimals, t.canonical_asset)
            for _, t in sorted(load_tokens(tokens_path).items())
        )
        labels = None
        if labels_path is not None:
            found = read_labels_file(labels_path).labels
            labels = tuple((address, label.entity) for address, label in sorted(found.items()) if label.entity)
        return ChainSpec(tokens, labels, tuple(parse_fusion(f) if isinstance(f, str) else f for f in fusions))
    except (TokensError, LabelsError) as error:
        raise ChainTableError(str(error)) from None
    except ChainTableError:
        raise
    except ValueError as error:
        raise ChainTableError(str(error)) from None
