"""Degradation operators and noise models, chosen by name (see operators/README.md)."""

from operators.base import LinearOperator, Operator
from operators.dense import MatrixOperator
from operators.noise import sigma_from_255
from operators.nonlinear_blur import OperatorUnavailable
from operators.registry import build_noise, build_operator, list_noises, list_operators, load_operator

__all__ = ["Operator", "LinearOperator", "build_operator", "list_operators", "build_noise", "list_noises",
           "load_operator", "sigma_from_255", "OperatorUnavailable", "MatrixOperator"]
