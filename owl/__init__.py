"""OWL: Outlier Weighed Layerwise sparsity for pruning large language models."""

__version__ = "0.1.0"
