"""The default backbone, in a module light enough for Config classes and the CLI to import."""

DEFAULT_MODEL = "efficientnet_lite0"
DEFAULT_WEIGHTS = "DEFAULT"
