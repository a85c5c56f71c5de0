"""Training the ADM UNet on a folder of images: config schema, data, run state, checkpoint files."""
from .checkpoint import atomic_write, export_model, load_train_state, save_torch
from .config import check_resumable, load_train_config, model_flags
from .data import ImageCrops
from .trainer import Trainer
