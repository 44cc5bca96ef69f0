"""Evaluation: the streaming engine every workload evaluates through."""
