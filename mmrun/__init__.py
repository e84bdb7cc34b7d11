"""mmrun: a configuration-driven market-making runner."""

__version__ = "0.1.0"
