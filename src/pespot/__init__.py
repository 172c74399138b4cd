"""pespot: precise event spotting in sports video."""

__version__ = "0.1.0"
