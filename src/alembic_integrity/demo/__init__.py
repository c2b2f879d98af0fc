"""The reference schema reproducing the four scenarios: models, data generator, decisions, the demo.
The top layer beside ``cli``: it may import anything, and nothing in the library imports it.
"""
