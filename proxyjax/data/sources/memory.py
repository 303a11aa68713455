"""Documents held in memory (tests and programmatic use)."""

from __future__ import annotations

from typing import Sequence

from proxyjax.data.sources.document import Document, check_index, make_doc


class ListSource:
  """Documents held in memory (tests and programmatic use)."""

  def __init__(self, docs: Sequence[bytes], name: str = "list"):
    self.name = name
    self._docs = [d.encode("utf-8") if isinstance(d, str) else bytes(d)
                  for d in docs]

  def __len__(self) -> int:
    return len(self._docs)

  def __getitem__(self, index: int) -> Document:
    i = check_index(index, len(self._docs))
    return make_doc(self._docs[i], self.name, str(i))

  def __repr__(self) -> str:
    return f"ListSource(name={self.name!r}, len={len(self)})"
