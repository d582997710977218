"""Batch scoring (``banditd score``); the live model, a snapshot or a replay as an estimator."""
