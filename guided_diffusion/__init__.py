"""ADM UNet, checkpoint loading and the diffusion core shared by every sampler."""
from .drunet import PUBLIC_DRUNETS, DRUNet
from .models import (PUBLIC_CHECKPOINTS, TINY_FLAGS, CheckpointError, create_model, load_model,
                     read_checkpoint)
from .unet import UNetModel, timestep_embedding
