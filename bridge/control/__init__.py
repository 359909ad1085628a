"""Celery's remote control for our worker: the pidbox mailbox (``celery inspect``,
``celery control``, ``celery status``, Flower) and the worker's view of its own tasks that
the commands answer from."""
