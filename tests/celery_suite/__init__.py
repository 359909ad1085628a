"""Celery's own integration suite, run against our worker (see run_suite.py)."""
