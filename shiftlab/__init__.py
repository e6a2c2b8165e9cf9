"""shiftlab: measure how much a medical-imaging classifier loses when the scanner changes."""

__version__ = "0.1.0"
