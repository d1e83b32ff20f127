"""AEQA-NAT reproduction: data, models, training, decoding, metrics and paper rendering."""

__version__ = "0.1.0"
