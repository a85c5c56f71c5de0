"""Samplers sharing one diffusion core, chosen by name: `build_sampler(name, **params)`."""
from . import dpps, dps, unconditional  # noqa: F401  (registers dpps, dps, ddpm, ddim)
from .base import Sampler, build_sampler, list_samplers, register
