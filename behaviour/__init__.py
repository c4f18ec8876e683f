"""Behaviour policies of the `local:` datasets: the committed files and the code that trained them (train.py)."""
