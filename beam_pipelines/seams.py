"""Gap fill across chunk boundaries.

Each chunk fills the gaps it can see. An empty interval between the last bar of one chunk and
the first bar of the next is filled after the chunks (``beam_pipelines.seam_fill``), with the
same functions the streaming-capable FillGaps transform uses. The filled bars go through the
same outputs as a chunk's bars (``beam_pipelines.outputs``), to every sink of the run, as the
bounded run ``seams``: files named ``part-seams.*`` (``manifest.SEAM_FILE`` in ``bars/``),
which every run rewrites.
"""

from __future__ import annotations

SEAM_RUN = "seams"
SEAM_FILES = "*/**/part-seams.*"
"""Every file the seam fill writes, under the output directory: bars in each file sink's
directory, and dead letters of rows a sink rejected."""
