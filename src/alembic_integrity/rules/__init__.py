"""The rules as values (CHECK, NOT NULL, foreign key, expectation), read from SQLAlchemy models,
with their repair policies. Imports only ``pg`` and the top-level modules.
"""
