"""Samplers sharing one diffusion core, chosen by name: `build_sampler(name, **params)`."""
from . import ddnm, diffpir, dpps, dps, gdp, pgdm, unconditional  # noqa: F401  (registers ddim, ddnm, ddpm, diffpir, dpps, dps, gdp, pgdm)
from .base import NonFiniteError, Sampler, build_sampler, list_samplers, register
from .patches import PatchedModel
