"""DPS ``nonlinear_blur`` needs a pretrained network that is not shipped with this project."""

from __future__ import annotations

from typing import Any, NoReturn


class OperatorUnavailable(RuntimeError):
    """An operator exists in the papers but needs files this installation does not have."""


def build_nonlinear_blur(**params: Any) -> NoReturn:
    """Raises `OperatorUnavailable`: the operator is the bkse KernelWizard network with GOPRO-trained
    weights, and neither the network code nor the weights are part of this project."""
    raise OperatorUnavailable(
        "nonlinear_blur needs the bkse KernelWizard network and its GOPRO weights 'GOPRO_wVAE.pth' "
        "(github.com/VinAIResearch/blur-kernel-space-exploring model zoo, Google Drive id "
        "1vRoDpIsrTRYZKsOMPNbPcMtFDpCT6Foy; DPS puts it at bkse/experiments/pretrained/); neither is "
        "shipped with this project, so this operator cannot run here")
