"""asv: the margin losses (max-margin, multi_margin, Crammer-Singer), loss and gradient."""

from .common import benchmark_classes

globals().update(benchmark_classes("margin"))
