"""Fault injection for banditd: throwaway Redis and Postgres, a load generator, the checks.

``make chaos`` runs :mod:`chaos.run`; tests/test_faults.py uses the same pieces
for the short version that ``make test`` runs.
"""
