"""Samplers sharing one diffusion core, chosen by name: `build_sampler(name, **params)`."""
from . import daps, ddnm, ddrm, diffpir, dpir, dpps, dps, gdp, mcg, pgdm, reddiff, unconditional  # noqa: F401  (registers daps, ddim, ddnm, ddpm, ddrm, diffpir, dpps, dps, gdp, mcg, pgdm, reddiff, dpir)
from .base import NonFiniteError, Sampler, build_sampler, list_samplers, register
from .patches import PatchedModel
