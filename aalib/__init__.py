"""aalib: a study kit for attention-augmented convolution.

Bello et al. 2019 (AA-conv, https://arxiv.org/abs/1904.09925) and its linear-complexity variant
built on Shen et al. 2021 (efficient attention, https://arxiv.org/abs/1812.01243). The package
root exports the layer and its kernels; the rest is imported from its modules, which import one
way, lowest first (tests/test_imports.py keeps it so):

* leaves: :mod:`.config` (the strict YAML config), :mod:`.checks` (argument checks), :mod:`.io`
  (atomic writes), :mod:`.lock` (one writer per run folder), :mod:`.machine`, :mod:`.memory`,
  :mod:`.stats`, :mod:`.tables`, :mod:`.fresh_process`;
* the library: :mod:`.native` and :mod:`.attention` (the kernels), :mod:`.layers`
  (``AugmentedConv2d``), :mod:`.models` and :mod:`.data` (registries), :mod:`.layer_cost`;
  :mod:`.experiment` (a config checked against the registries and built);
* the trainer: :mod:`.checkpoint`, :mod:`.distributed`, :mod:`.recipe`, :mod:`.run_log`, then
  :mod:`.train`;
* what reads finished runs: :mod:`.runs`, :mod:`.verdict`, :mod:`.complexity`,
  :mod:`.analysis`, then :mod:`.report` and :mod:`.widgets`;
* on top: :mod:`.batch` (``aalib run`` / ``sweep`` / ``report`` through papermill),
  :mod:`.bench` (``python -m aalib.bench``) and the command line (``python -m aalib``).
"""

from .attention import attention_weights, linear_attention, softmax_attention
from .layers import AugmentedConv2d

__version__ = "0.1.0"

__all__ = ["AugmentedConv2d", "attention_weights", "linear_attention", "softmax_attention", "__version__"]
