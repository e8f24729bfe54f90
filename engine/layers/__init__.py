"""Built-in ops, one module per family. Importing registers them."""

from engine.layers import core  # noqa: F401
