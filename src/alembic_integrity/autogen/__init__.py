"""Autogenerate support, in two parts: ``compare`` (what differs, as the
``ensure_*`` operations of ``alembic_integrity.operations``, each paired with its
undo) and ``render`` (their Python source).

Switch it on from env.py with :func:`alembic_integrity.autogenerate.integrity_autogenerate`.
"""
