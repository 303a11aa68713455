"""ReCode-style robustness: seeded prompt perturbations and robust pass@k.

Four families, each a set of semantics-preserving rewrites of a problem's
prompt (the model sees the perturbed prompt; the tests are unchanged except
where a rename must follow), one module each:

=================  =============  ==============================================
module             family         rewrites
=================  =============  ==============================================
function_names     ``func_name``  rename the entry point (case styles, synonym,
                                  prefix/suffix, typo, abbreviation)
formatting         ``format``     layout: docstring indentation, blank lines,
                                  trailing whitespace, split signature, quotes
syntax             ``syntax``     rename parameters, drop annotations, builtin
                                  generics, quotes in the examples
docstrings         ``docstring``  paraphrase the prose: synonyms, case, typos,
                                  spaces, contractions
=================  =============  ==============================================

Shared parts: ``source`` (positions, parsing, validity, token renaming),
``doctext`` (the docstring: prose lines, editing its body), ``engine``
(``perturb``: choosing a rewrite per seed, checking the result),
``metrics`` (robust pass@k and the drop) and ``evaluate`` (running a
completion function on the nominal and perturbed problems).

``released`` reads ReCode's own released perturbed HumanEval files
(``eval.recode_path``) and scores them beside ours.
"""

from proxyjax.eval.recode import released
from proxyjax.eval.recode.engine import (
           DEFAULT_NUM_SEEDS,
           FAMILIES,
           family_rewrites,
           perturb,
           perturbed_suite,
)
from proxyjax.eval.recode.evaluate import evaluate_robustness
from proxyjax.eval.recode.metrics import robust_metrics

__all__ = ["FAMILIES", "DEFAULT_NUM_SEEDS", "family_rewrites", "perturb", "perturbed_suite",
           "robust_metrics", "evaluate_robustness", "released"]
