"""The reference schema reproducing the four scenarios: models and a data generator."""
