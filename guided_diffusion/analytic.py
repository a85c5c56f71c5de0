"""An analytic diffusion prior: a Gaussian mixture whose denoiser and posteriors are exact.

With x_0 ~ sum_k w_k N(mu_k, S_k) and x_t = sqrt(abar) x_0 + sqrt(1 - abar) n, the marginal of
x_t is the mixture with means sqrt(abar) mu_k and covariances abar S_k + (1 - abar) I, so Tweedie's
formula gives the exact eps(x_t, t) = -sqrt(1 - abar) grad log p_t(x_t). For y = A x_0 + sigma n
the posterior is again a Gaussian mixture with closed-form parameters. The samplers' tests use
these as ground truth; `sliced_wasserstein` compares sample sets.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from .diffusion import vp_alphas_cumprod


class GaussianMixture:
    """p(x) = sum_k w_k N(mu_k, S_k) over images of shape `shape` (flattened to d = prod(shape)).

    weights: (K,), means: (K, d), covs: (K, d, d) symmetric positive definite; float64 throughout.
    """

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor, shape: Sequence[int]):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.weights = self.weights / self.weights.sum()
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.covs = torch.as_tensor(covs, dtype=torch.float64)
        self.shape = tuple(shape)
        self.dim = math.prod(self.shape)
        if self.means.shape != (len(self.weights), self.dim) or self.covs.shape != (len(self.weights), self.dim, self.dim):
            raise ValueError("means must be (K, d) and covs (K, d, d) with d = prod(shape)")
        # Eigenvectors let the noised covariances abar S + (1 - abar) I be inverted for any t at once.
        self.eigvals, self.eigvecs = torch.linalg.eigh(self.covs)
        if bool((self.eigvals <= 0).any()):
            raise ValueError("covariances must be positive definite")

    @classmethod
    def random(cls, shape: Sequence[int] = (3, 4, 4), n_components: int = 3, generator: Optional[torch.Generator] = None,
               mean_scale: float = 0.5, std_range: Tuple[float, float] = (0.05, 0.3)) -> "GaussianMixture":
        """A well-separated random mixture with anisotropic covariances, values mostly in [-1, 1]."""
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        d = math.prod(shape)
        weights = 0.5 + torch.rand(n_components, generator=g, dtype=torch.float64)
        means = mean_scale * (2 * torch.rand(n_components, d, generator=g, dtype=torch.float64) - 1)
        q, _ = torch.linalg.qr(torch.randn(n_components, d, d, generator=g, dtype=torch.float64))
        lo, hi = std_range
        stds = lo + (hi - lo) * torch.rand(n_components, d, generator=g, dtype=torch.float64)
        covs = q @ torch.diag_embed(stds ** 2) @ q.transpose(-1, -2)
        return cls(weights, means, (covs + covs.transpose(-1, -2)) / 2, shape)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n draws shaped (n, *shape)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        root = self.eigvecs * self.eigvals.sqrt()[:, None, :]  # S_k = root root^T
        x = self.means[k] + torch.einsum("nij,nj->ni", root[k], z)
        return x.reshape(n, *self.shape)

    def _component_terms(self, x: torch.Tensor, abar: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """For x_t (n, d) at noise levels abar (n,): log(w_k N(x_t; ...)) (n, K) and the
        per-component scores -C_k^{-1}(x_t - sqrt(abar) mu_k), (n, K, d)."""
        a = abar.reshape(-1, 1, 1)
        var = a * self.eigvals[None] + (1 - a)                               # (n, K, d) eigenvalues of C_k
        diff = x[:, None, :] - a.sqrt() * self.means[None]                   # (n, K, d)
        u = torch.einsum("nkd,kde->nke", diff, self.eigvecs)                 # eigen-coordinates
        log_n = -0.5 * ((u ** 2 / var).sum(-1) + var.log().sum(-1) + self.dim * math.log(2 * math.pi))
        scores = -torch.einsum("nke,kde->nkd", u / var, self.eigvecs)
        return self.weights.log()[None] + log_n, scores

    def log_prob(self, x: torch.Tensor, abar: float | torch.Tensor = 1.0) -> torch.Tensor:
        """log p_t(x) of the mixture noised to level abar (abar = 1: the mixture itself); x (n, *shape)."""
        flat = x.reshape(len(x), -1).to(torch.float64)
        log_terms, _ = self._component_terms(flat, torch.as_tensor(abar, dtype=torch.float64).expand(len(x)))
        return torch.logsumexp(log_terms, dim=1)

    def score(self, x: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        """grad_x log p_t(x) for x (n, *shape) at per-sample noise levels abar (n,)."""
        flat = x.reshape(len(x), -1).to(torch.float64)
        log_terms, scores = self._component_terms(flat, abar.to(torch.float64))
        resp = torch.softmax(log_terms, dim=1)
        return (resp[..., None] * scores).sum(1).reshape(x.shape)

    def posterior(self, A: torch.Tensor, y: torch.Tensor, sigma: float) -> "GaussianMixture":
        """p(x | y) for y = A x + sigma n, A (m, d), y (m,), sigma > 0.

        Component k: S' = (S^-1 + A^T A / sigma^2)^-1, mu' = S' (S^-1 mu + A^T y / sigma^2), weight
        proportional to w_k N(y; A mu_k, A S_k A^T + sigma^2 I).
        """
        A = A.to(torch.float64)
        y = y.reshape(-1).to(torch.float64)
        s2 = float(sigma) ** 2
        prec = torch.linalg.inv(self.covs) + (A.T @ A / s2)[None]
        covs = torch.linalg.inv(prec)
        covs = (covs + covs.transpose(-1, -2)) / 2
        rhs = torch.linalg.solve(self.covs, self.means[..., None])[..., 0] + (A.T @ y / s2)[None]
        means = torch.einsum("kij,kj->ki", covs, rhs)
        y_cov = A[None] @ self.covs @ A.T[None] + s2 * torch.eye(len(y), dtype=torch.float64)
        log_ev = torch.distributions.MultivariateNormal(self.means @ A.T, covariance_matrix=y_cov).log_prob(y)
        weights = torch.softmax(self.weights.log() + log_ev, dim=0)
        return GaussianMixture(weights, means, covs, self.shape)


class GaussianMixtureDenoiser:
    """The exact eps-prediction model of a `GaussianMixture` prior: callable as model(x_t, t).

    alphas_cumprod: the training schedule's abar (indexed by the training-grid t the samplers pass);
    float t (DAPS's continuous timesteps) reads abar from the continuous linear VP-SDE instead
    (`vp_alphas_cumprod`). Returns eps with the dtype and shape of x_t (C channels: fixed variance).
    """

    def __init__(self, prior: GaussianMixture, alphas_cumprod: torch.Tensor):
        self.prior = prior
        self.alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float64)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if t.is_floating_point():
            abar = vp_alphas_cumprod(t.cpu().to(torch.float64), len(self.alphas_cumprod)).to(x_t.device)
        else:
            abar = self.alphas_cumprod[t.cpu()].to(x_t.device)
        score = self.prior.score(x_t.to(torch.float64).cpu(), abar.cpu()).to(x_t.device)
        eps = -(1 - abar).sqrt().reshape(-1, *([1] * (x_t.dim() - 1))) * score
        return eps.to(x_t.dtype)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, n_projections: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between two sample sets (n_a, ...) and (n_b, ...).

    Each random unit direction gives the 1-D W2 between the projected samples, computed from
    matching quantiles at levels (i + 1/2) / m, m = min(n_a, n_b); the result is the square root of
    the mean squared W2 over directions. Fixed `seed`, so the value is reproducible.
    """
    a = a.reshape(len(a), -1).to(torch.float64)
    b = b.reshape(len(b), -1).to(torch.float64)
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(a.shape[1], n_projections, generator=g, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    m = min(len(a), len(b))
    levels = (torch.arange(m, dtype=torch.float64) + 0.5) / m
    qa = torch.quantile(a @ theta, levels, dim=0)
    qb = torch.quantile(b @ theta, levels, dim=0)
    return float(((qa - qb) ** 2).mean().sqrt())


def linear_problems(sigma: float = 0.05, shape: Sequence[int] = (3, 4, 4)
                    ) -> Tuple[GaussianMixtureDenoiser, Dict[str, Tuple[Any, torch.Tensor, GaussianMixture]]]:
    """The samplers' reference problems: the 3-component mixture prior (seed 0) and one x drawn
    from it, observed through half the pixels ("inpainting"), 2x average pooling ("downsampling")
    and a 16 x d Gaussian matrix ("random_matrix") with noise sigma.

    Returns (exact denoiser for the linear 1000-step schedule, {name: (operator, y (1, m), exact
    posterior)}). Fixed seeds: the problems are the same in every test and script.
    """
    from operators import MatrixOperator
    from operators.dense import avgpool_matrix_2d, selection_matrix

    from .diffusion import GaussianDiffusion

    d = math.prod(shape)
    prior = GaussianMixture.random(shape, 3, torch.Generator().manual_seed(0))
    model = GaussianMixtureDenoiser(prior, GaussianDiffusion.from_config().alphas_cumprod)
    g = torch.Generator().manual_seed(5)
    x_true = prior.sample(1, g)
    matrices = {"inpainting": selection_matrix(d, torch.randperm(d, generator=g)[:d // 2]),
                "downsampling": avgpool_matrix_2d(shape, 2),
                "random_matrix": torch.randn(16, d, generator=g, dtype=torch.float64) / math.sqrt(d)}
    problems = {}
    for name, A in matrices.items():
        op = MatrixOperator(A, shape)
        y = op.forward(x_true) + sigma * torch.randn(1, A.shape[0], generator=g, dtype=torch.float64)
        problems[name] = (op, y, prior.posterior(A, y[0], sigma))
    return model, problems
