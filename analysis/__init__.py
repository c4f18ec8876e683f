"""Analysis of o2o-bench run records: collection, rliable aggregates, tables, figures and the report CLI."""

from analysis.collect import collect, domain_of, write_tables
from analysis.published import canonical_algorithm, load_published, load_totals

__all__ = ["canonical_algorithm", "collect", "domain_of", "load_published", "load_totals", "write_tables"]
