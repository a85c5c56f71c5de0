"""Samplers sharing one diffusion core, chosen by name: `build_sampler(name, **params)`."""
from . import unconditional  # noqa: F401  (registers ddpm, ddim)
from .base import Sampler, build_sampler, list_samplers, register
