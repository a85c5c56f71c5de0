"""Run configs: YAML files in this folder and the schema that validates them."""
from .schema import (DEFAULTS, ConfigError, add_config_arguments, load_config, parse_set, pick_device,
                     read_yaml_mapping, resolve_path)
