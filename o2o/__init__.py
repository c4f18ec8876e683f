"""o2o-bench shared package: datasets, environments, evaluation, normalized scores, run records, suite runner."""

__version__ = "0.1.0"
