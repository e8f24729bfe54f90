"""Built-in ops, one module per family. Importing registers them."""

from engine.layers import attention, conv, core, generative, merge, recurrent  # noqa: F401
