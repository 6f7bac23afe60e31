"""The version of deepcomp (pyproject.toml's), in a module of its own: the stage records and
the command line read it without importing the package's stages."""
__version__ = "0.1.0"
