"""The compressors ablation: no training, the compressor analysis in the report."""

import json
import os

import pytest

from proxyjax import ablation
from proxyjax.errors import UserError


def test_compressors_report(tmp_path):
  w = str(tmp_path / "compressors")
  result = ablation.run("compressors", scale="ci", workdir=w, arms="raw,deflate,bit,neural",
                        log=lambda s: None)
  data = json.load(open(result.report_json))
  views = data["compressors"]["views"]
  assert list(views) == ["raw", "deflate", "bit"]
  assert views["raw"]["compression"]["bytes_per_symbol"] == 1.0
  assert views["bit"]["compression"]["bytes_per_symbol"] == 0.125
  assert 1.5 < views["deflate"]["compression"]["bytes_per_symbol"] < 6.0
  assert data["skipped"] == {"neural": ablation.ABLATIONS["compressors"].arms[-1].skip}
  assert data["rows"] == [] and result.rows == []
  assert result.plots == {"compressors": os.path.join(w, "compressors.png")}
  assert "| deflate | " in result.markdown and "compressors.png" in result.markdown
  # A re-run reuses the analysis; another budget is refused (it trains nothing).
  again = ablation.run("compressors", scale="ci", workdir=w, arms="raw,deflate,bit,neural",
                       log=lambda s: None)
  assert again.markdown == result.markdown
  with pytest.raises(UserError, match="takes no budget"):
    ablation.run("compressors", scale="ci", workdir=w, budget="steps:3")
