"""User-facing errors. Each says what was received, what was expected and how to fix it."""


class LayerLabError(ValueError):
    """Base class for every error whose message is meant for the user."""


class SpecError(LayerLabError):
    """A model spec that cannot be built; `node_id` names the offending node (None: the whole spec)."""

    def __init__(self, node_id: str | None, message: str):
        self.node_id = node_id
        self.message = message
        super().__init__(f"Layer '{node_id}': {message}" if node_id else message)


class DataError(LayerLabError):
    """A data file or dataset choice that cannot be used."""


class ConfigError(LayerLabError):
    """Training settings that cannot work with this model or dataset."""
