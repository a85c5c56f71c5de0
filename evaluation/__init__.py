"""Metrics (PSNR, SSIM, LPIPS, FID, KID), image pairing, published tables and multi-GPU sharding."""
from .errors import EvaluationError
from .evaluator import METRICS, Networks, Result, evaluate, format_summary, parse_metrics, write_result
from .fid import InceptionFeatures, fid_from_features, kid_from_features
from .metrics import psnr, ssim
from .pairs import Pair, pair_images
from .perceptual import LPIPS
from .tables import Comparison, Table, get_table, load_tables, run_folder
