"""Samplers sharing one diffusion core, chosen by name: `build_sampler(name, **params)`."""
from . import diffpir, dpps, dps, gdp, unconditional  # noqa: F401  (registers diffpir, dpps, dps, gdp, ddpm, ddim)
from .base import NonFiniteError, Sampler, build_sampler, list_samplers, register
from .patches import PatchedModel
