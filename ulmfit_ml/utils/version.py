"""The package version (one place; read by the saved models' and run directories' metadata)."""
__all__ = ["__version__"]

__version__ = "0.3.0.dev0"  # 0.2: the release with the first shipped en-small; 0.3: issue 22's work
