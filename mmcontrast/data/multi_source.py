"""Several datasets read as one, for multi-dataset training: row ``i`` of the whole is a row of one source.

Each source keeps its own columns; a row comes back as ``(source index, row)`` so that the method's collate can
treat a batch with its source's columns and loss. :class:`~mmcontrast.data.samplers.MultiSourceBatchSampler` draws
each batch from one source, using :attr:`MultiSourceDataset.offsets` to shift a source's rows into the whole.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any


class MultiSourceDataset(Sequence[tuple[int, Any]]):
    """The rows of ``sources`` one after another; item ``i`` is ``(source index, that source's row)``.

    Args:
        sources: datasets indexable by integer (``datasets.Dataset``, lists), each non-empty.
    """

    def __init__(self, sources: Sequence[Sequence[Any]]) -> None:
        if not sources:
            raise ValueError("MultiSourceDataset needs at least one source")
        empty = [i for i, source in enumerate(sources) if len(source) == 0]
        if empty:
            raise ValueError(f"source(s) {empty} have no rows")
        self.sources = list(sources)
        self.offsets = [0]
        for source in self.sources[:-1]:
            self.offsets.append(self.offsets[-1] + len(source))

    def __len__(self) -> int:
        return self.offsets[-1] + len(self.sources[-1])

    def __getitem__(self, index: int) -> tuple[int, Any]:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(f"row {index} is outside the {len(self)} rows of the sources")
        index %= len(self)
        source = bisect.bisect_right(self.offsets, index) - 1
        return source, self.sources[source][index - self.offsets[source]]
