"""Autogenerate support, in three parts: ``compare`` (what differs), ``ops`` (the
``ensure_*`` operations with their undo) and ``render`` (their Python source).

Switch it on from env.py with :func:`alembic_integrity.autogenerate.integrity_autogenerate`.
"""
