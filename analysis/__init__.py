"""Analysis of o2o-bench run records: collection, rliable aggregates, tables, figures and the report CLI."""

from analysis.collect import collect, write_tables
from analysis.names import canonical_algorithm, domain_of
from analysis.published import load_published, load_totals

__all__ = ["canonical_algorithm", "collect", "domain_of", "load_published", "load_totals", "write_tables"]
