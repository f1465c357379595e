"""aalib: a study kit for attention-augmented convolution.

Bello et al. 2019 (AA-conv, https://arxiv.org/abs/1904.09925) and its linear-complexity variant
built on Shen et al. 2021 (efficient attention, https://arxiv.org/abs/1812.01243).
"""

from .attention import attention_weights, linear_attention, softmax_attention
from .layers import AugmentedConv2d

__version__ = "0.1.0"

__all__ = ["AugmentedConv2d", "attention_weights", "linear_attention", "softmax_attention", "__version__"]
