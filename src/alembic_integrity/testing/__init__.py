"""Test tooling for projects: the pytest plugin (fixtures, generated verify checks).
Imports anything below it; nothing imports it.
"""
