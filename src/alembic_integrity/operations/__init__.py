"""The ``op.ensure_*`` Alembic operations: objects, their DDL plans, how plans run, ``repair=True``.
Imports ``rules`` and ``pg``; reaches its siblings ``audit.violations`` and ``repair`` (the hook).
"""
