"""Accounts, with a downgrade nobody ever ran."""
