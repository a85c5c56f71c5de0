"""Run configs: YAML files in this folder and the schema that validates them."""
from .schema import DEFAULTS, ConfigError, load_config, parse_set, pick_device, resolve_path
