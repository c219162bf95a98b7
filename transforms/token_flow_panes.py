"""Token activity and exchange flows as panes: the deduplicated transfers of each (chain, window),
summarized per token in bulk, merged per (chain, token, window) as the window's panes fire, and
formatted into rows of ``token_activity`` and ``exchange_flows``.

The windows, triggers and accumulation are the run's (``BarSpec.window_into``, applied by the
skeleton), so a retraction arriving after a window's on-time pane fires a late pane that revises
it, as a late trade does a bar.
"""

from __future__ import annotations

import typing

import apache_beam as beam

from transforms.bar_spec import BarSpec
from transforms.bars import PANE_TIMING_NAMES
from transforms.sized_coders import SizedPickleCoder, register
from transforms.token_aggregates import (
    TokenWindow,
    activity_fields,
    flow_fields,
    merge,
    settle,
    summarize,
    token_fields,
)
from transforms.token_transfers import ERC20, TokenTransferChunk

FLOWS_TAG = "exchange_flows"
TokenWindowKey = typing.Tuple[str, str, int]  # (chain, token address, window start)


class TokenTransferChunkCoder(SizedPickleCoder):
    value_type = TokenTransferChunk


register(TokenTransferChunkCoder)


class _SummarizeTransfers(beam.DoFn):
    def __init__(self, spec: BarSpec):
        self._labels = spec.chain.label_index

    def process(self, element):
        (chain, _standard, window_start), unique = element
        chunk = unique.chunk
        for token, window in summarize(chunk.records, self._labels, chunk.id_hash).items():
            yield (chain, token, window_start), window


class MergeTokenWindows(beam.CombineFn):
    """Partials are kept as they come and merged in one pass when a pane is extracted (or when
    many have gathered): merging multisets on every add would copy them again and again."""

    COMPACT_AFTER = 32

    def create_accumulator(self):
        return []

    def add_input(self, accumulator, window):
        accumulator.append(window)
        return [merge(accumulator)] if len(accumulator) > self.COMPACT_AFTER else accumulator

    def merge_accumulators(self, accumulators):
        merged = [window for accumulator in accumulators for window in accumulator]
        return [merge(merged)] if len(merged) > self.COMPACT_AFTER else merged

    def compact(self, accumulator):
        return [merge(accumulator)] if len(accumulator) > 1 else accumulator

    def extract_output(self, accumulator):
        return merge(accumulator) if accumulator else TokenWindow()


class _FormatTokenRows(beam.DoFn):
    """One pane of a (chain, token, window) -> its ``token_activity`` row, and an ``exchange_flows``
    row for each entity its transfers ever touched (one netted to zero by a retraction included,
    so the new pane revises the old)."""

    def __init__(self, spec: BarSpec):
        self._spec = spec
        self._chain = spec.chain
        self._withdraw_unseen = spec.accumulation == "discarding"
        self._panes = beam.metrics.Metrics.counter("cryptobeam", "token_activity_panes")

    def process(self, element, pane=beam.DoFn.PaneInfoParam):
        (chain, token, window_start), window = element
        if not window.count and not len(window.retracted_ids):
            return
        settled = settle(window, self._chain.label_index, self._withdraw_unseen)
        info = self._chain.token(chain, token)
        pane_fields = {
            "pane_timing": PANE_TIMING_NAMES[pane.timing],
            "pane_index": int(pane.index),
            "is_final": bool(pane.is_last),
        }
        common = {
            "exchange": chain,
            "symbol": ERC20,
            **token_fields(self._chain, chain, token),
            "interval": self._spec.interval.text,
            "window_start": window_start,
            "window_end": window_start + self._spec.interval.micros,
        }
        self._panes.inc()
        yield {**common, **activity_fields(settled, info), **pane_fields}
        for entity, figures in sorted(settled.flows.items()):
            flow = {**common, "entity": entity, **flow_fields(figures, info), **pane_fields}
            yield beam.pvalue.TaggedOutput(FLOWS_TAG, flow)


class ComputeTokenFlows(beam.PTransform):
    """Windowed ((chain, standard, window start), UniqueRecords of transfers) -> {"token_activity": rows,
    "exchange_flows": rows}, each in the global window."""

    def __init__(self, spec: BarSpec, label=None):
        super().__init__(label)
        self._spec = spec

    def expand(self, unique):
        rows = (
            unique
            | "SummarizeTransfers"
            >> beam.ParDo(_SummarizeTransfers(self._spec)).with_output_types(typing.Tuple[TokenWindowKey, TokenWindow])
            | "MergeTokenWindows" >> beam.CombinePerKey(MergeTokenWindows())
            | "FormatTokenRows" >> beam.ParDo(_FormatTokenRows(self._spec)).with_outputs(FLOWS_TAG, main="activity")
        )
        return {
            "token_activity": rows.activity | "ActivityToGlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows()),
            "exchange_flows": rows[FLOWS_TAG] | "FlowsToGlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows()),
        }
