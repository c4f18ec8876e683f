"""Analysis of o2o-bench run records: collection, rliable aggregates, tables, figures and the report CLI.

The package imports none of its modules, so `python -m analysis.collect` and `python -m analysis.report` (what the
suite runner calls) start clean; import what you use: `from analysis.collect import collect`,
`from analysis.names import canonical_algorithm, domain_of`, `from analysis.published import load_published`.
"""
