"""Samplers sharing one diffusion core, chosen by name: `build_sampler(name, **params)`."""
from . import ddnm, diffpir, dpir, dpps, dps, gdp, mcg, pgdm, unconditional  # noqa: F401  (registers ddim, ddnm, ddpm, diffpir, dpps, dps, gdp, pgdm, dpir, mcg)
from .base import NonFiniteError, Sampler, build_sampler, list_samplers, register
from .patches import PatchedModel
