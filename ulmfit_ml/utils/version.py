"""The package version (one place; read by the saved models' and run directories' metadata)."""
__all__ = ["__version__"]

__version__ = "0.1.0"
