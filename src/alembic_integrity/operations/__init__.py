"""The ``op.ensure_*`` Alembic operations: objects, their DDL plans, how plans run, ``repair=True``.
Imports ``rules`` and ``pg``; reaches ``audit.violations`` and ``repair`` (its siblings) for messages
and the repair hook.
"""
