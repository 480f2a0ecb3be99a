"""Metrics for class-conditional image generators, computed from feature vectors.

Every metric here compares a set of real samples with a set of generated ("fake") ones through
features (N, D) from a network the caller chooses. In zoo that network is a small classifier zoo
trains itself, so the metrics work offline; the standard FID, with Inception v3 features whose
weights are downloaded from the internet, is `inception_fid` (through torchmetrics,
`pip install -e ".[gen]"`).

    fid(real_features, fake_features)              # Fréchet distance of the two Gaussian fits
    precision_recall(real_features, fake_features)  # Kynkäänniemi et al. 2019, k = 3
    class_consistency(classifier_predictions, conditioning_labels)
    inception_fid(real_uint8_images, fake_uint8_images)

- FID (Heusel et al. 2017) fits a Gaussian to each set's features and returns the Fréchet (2-
  Wasserstein) distance between them, ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)). It is
  biased upwards for finite sets: compare values only at equal sample counts.
- Improved precision and recall (Kynkäänniemi et al. 2019, arXiv 1904.06991) estimate each set's
  manifold as the union of balls around its points, each with the radius to the point's k-th
  nearest neighbour in the same set. Precision is the fraction of fake samples inside the real
  manifold (quality), recall the fraction of real samples inside the fake manifold (coverage).
- Class consistency is a classifier's accuracy on generated samples against the class each was
  conditioned on: does the generator draw the class it was asked for.

The statistics are computed in float64 whatever the features' dtype.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

from zoo.errors import ZooError

# Rows of a pairwise-distance block are chosen so that one block holds at most this many float64
# entries (128 MiB): 10k x 10k sets of any dimension never materialise the whole distance matrix.
DISTANCE_BLOCK_ELEMENTS = 2**24

# A covariance may miss symmetry / positive semi-definiteness by rounding, relative to its size.
COVARIANCE_TOLERANCE = 1e-6

INCEPTION_FEATURE_LAYERS = (64, 192, 768, 2048)
GEN_EXTRA_HINT = 'pip install -e ".[gen]"'


# --- feature statistics and the Fréchet distance -------------------------------------------------


def _as_float64_numpy(values, what: str) -> np.ndarray:
    """A float64 numpy copy of a tensor or array, refusing NaN and inf (they would poison a sum
    silently)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(values, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ZooError(f"{what} contain NaN or inf values")
    return array


def _check_feature_matrix(features, what: str) -> None:
    """Features are (N, D): one row per sample."""
    if not isinstance(features, (torch.Tensor, np.ndarray)):
        raise ZooError(f"{what} must be a tensor of shape (samples, features), "
                       f"got {type(features).__name__}")
    if features.ndim != 2 or features.shape[1] == 0:
        raise ZooError(f"{what} must have shape (samples, features), got {tuple(features.shape)}")


def _check_same_feature_dim(real_features, fake_features) -> None:
    _check_feature_matrix(real_features, "real features")
    _check_feature_matrix(fake_features, "fake features")
    if real_features.shape[1] != fake_features.shape[1]:
        raise ZooError(f"real and fake features differ in dimension: {real_features.shape[1]} "
                       f"vs {fake_features.shape[1]} (use the same feature extractor for both)")


def feature_statistics(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The mean (D,) and unbiased covariance (D, D) of features (N, D), in float64: the Gaussian
    fit that FID compares."""
    _check_feature_matrix(features, "features")
    if features.shape[0] < 2:
        raise ZooError(f"a covariance needs at least 2 samples, got {features.shape[0]}")
    samples = _as_float64_numpy(features, "features")
    mean = samples.mean(axis=0)
    covariance = np.atleast_2d(np.cov(samples, rowvar=False))
    return mean, covariance


def _check_covariance(sigma: np.ndarray, dim: int, what: str) -> np.ndarray:
    """A symmetric positive semi-definite (D, D) matrix, symmetrised (rounding may break
    symmetry in the last bits)."""
    if sigma.shape != (dim, dim):
        raise ZooError(f"{what} must have shape ({dim}, {dim}) to match the mean, "
                       f"got {sigma.shape}")
    scale = float(np.abs(sigma).max()) if sigma.size else 0.0
    if np.abs(sigma - sigma.T).max(initial=0.0) > COVARIANCE_TOLERANCE * scale:
        raise ZooError(f"{what} is not symmetric: is it a covariance matrix?")
    symmetric = (sigma + sigma.T) / 2
    if scale > 0 and np.linalg.eigvalsh(symmetric)[0] < -COVARIANCE_TOLERANCE * scale:
        raise ZooError(f"{what} has negative eigenvalues: a covariance is positive semi-definite")
    return symmetric


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """The symmetric square root of a PSD matrix; rounding's tiny negative eigenvalues become 0."""
    eigenvalues, eigenvectors = np.linalg.eigh(sigma)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr (S1 S2)^(1/2) for PSD S1, S2, as the sum of the singular values of S1^(1/2) S2^(1/2).

    S1 S2 is similar to S1^(1/2) S2 S1^(1/2) = (S1^(1/2) S2^(1/2)) (S1^(1/2) S2^(1/2))^T, so the
    square roots of its eigenvalues are those singular values. Singular values carry rounding
    errors of order eps * norm, where the eigenvalues of the product would carry eps * norm^2
    and their square roots sqrt(eps) * norm: the singular values keep a set against itself at
    FID ~ 1e-15 relative, even for rank-deficient covariances (fewer samples than features)."""
    root_product = _psd_sqrt(sigma1) @ _psd_sqrt(sigma2)
    return float(np.linalg.svd(root_product, compute_uv=False).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """The Fréchet distance ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between the Gaussians
    N(mu1, S1) and N(mu2, S2) (squared 2-Wasserstein distance), in float64; never negative."""
    mu1 = _as_float64_numpy(mu1, "mu1")
    mu2 = _as_float64_numpy(mu2, "mu2")
    if mu1.ndim != 1 or mu1.shape != mu2.shape or mu1.size == 0:
        raise ZooError(f"the means must be vectors of the same length, got shapes {mu1.shape} "
                       f"and {mu2.shape}")
    dim = mu1.shape[0]
    sigma1 = _check_covariance(_as_float64_numpy(sigma1, "sigma1"), dim, "sigma1")
    sigma2 = _check_covariance(_as_float64_numpy(sigma2, "sigma2"), dim, "sigma2")
    mean_term = float(np.sum((mu1 - mu2) ** 2))
    covariance_term = (np.trace(sigma1) + np.trace(sigma2)
                       - 2.0 * _trace_sqrt_product(sigma1, sigma2))
    # The covariance term is a squared distance (Bures), >= 0; rounding may leave -1e-15.
    return mean_term + max(float(covariance_term), 0.0)


def fid(real_features: torch.Tensor, fake_features: torch.Tensor) -> float:
    """Fréchet distance between Gaussian fits of real and fake features (N, D) and (M, D)."""
    _check_same_feature_dim(real_features, fake_features)
    mu_real, sigma_real = feature_statistics(real_features)
    mu_fake, sigma_fake = feature_statistics(fake_features)
    return frechet_distance(mu_real, sigma_real, mu_fake, sigma_fake)


# --- improved precision and recall ---------------------------------------------------------------


def _as_float64_tensor(features: torch.Tensor, what: str, device: torch.device) -> torch.Tensor:
    features = torch.as_tensor(features).detach().to(device, torch.float64)
    if not torch.isfinite(features).all():
        raise ZooError(f"{what} contain NaN or inf values")
    return features


def _rows_per_block(columns: int) -> int:
    return max(1, DISTANCE_BLOCK_ELEMENTS // max(columns, 1))


def _kth_neighbour_distances(points: torch.Tensor, k: int) -> torch.Tensor:
    """For every point, the distance to its k-th nearest other point of the same set: the radius
    of its ball in the set's manifold estimate."""
    n = points.shape[0]
    radii = torch.empty(n, dtype=points.dtype, device=points.device)
    block = _rows_per_block(n)
    for start in range(0, n, block):
        stop = min(start + block, n)
        distances = torch.cdist(points[start:stop], points)
        rows = torch.arange(stop - start, device=points.device)
        distances[rows, rows + start] = torch.inf  # a point is not its own neighbour
        radii[start:stop] = distances.kthvalue(k, dim=1).values
    return radii


def _fraction_inside_manifold(queries: torch.Tensor, centres: torch.Tensor,
                              radii: torch.Tensor) -> float:
    """The fraction of queries within radius of at least one centre (the ball's surface counts
    as inside, as in the paper's reference implementation)."""
    inside = 0
    block = _rows_per_block(centres.shape[0])
    for start in range(0, queries.shape[0], block):
        distances = torch.cdist(queries[start:start + block], centres)
        inside += int((distances <= radii).any(dim=1).sum())
    return inside / queries.shape[0]


def precision_recall(real_features: torch.Tensor, fake_features: torch.Tensor,
                     k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): precision is the fraction of
    fake samples inside the real manifold, recall the fraction of real samples inside the fake
    manifold; a set's manifold is the union of balls around its points, radius = distance to the
    point's k-th nearest neighbour in the set (the paper uses k = 3). Euclidean distances in
    float64, computed in row blocks so that large sets fit in memory."""
    _check_same_feature_dim(real_features, fake_features)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ZooError(f"k (nearest neighbours) must be a positive whole number, got {k!r}")
    for what, features in (("real", real_features), ("fake", fake_features)):
        if features.shape[0] <= k:
            raise ZooError(f"k={k} nearest neighbours need more than {k} {what} samples, "
                           f"got {features.shape[0]}")
    device = real_features.device if isinstance(real_features, torch.Tensor) else "cpu"
    real = _as_float64_tensor(real_features, "real features", device)
    fake = _as_float64_tensor(fake_features, "fake features", device)
    precision = _fraction_inside_manifold(fake, real, _kth_neighbour_distances(real, k))
    recall = _fraction_inside_manifold(real, fake, _kth_neighbour_distances(fake, k))
    return precision, recall


# --- class consistency ---------------------------------------------------------------------------


def class_consistency(predicted_labels: torch.Tensor, conditioning_labels: torch.Tensor) -> float:
    """The fraction of generated samples that a classifier assigns to the class they were
    generated for: both arguments are (N,) integer class indices."""
    for what, labels in (("predicted", predicted_labels), ("conditioning", conditioning_labels)):
        if not isinstance(labels, torch.Tensor):
            raise ZooError(f"{what} labels must be a tensor, got {type(labels).__name__}")
        if labels.ndim != 1:
            hint = " (for logits, pass logits.argmax(1))" if labels.ndim == 2 else ""
            raise ZooError(f"{what} labels must be one class index per sample, shape (N,), "
                           f"got {tuple(labels.shape)}{hint}")
        if labels.is_floating_point() or labels.is_complex():
            raise ZooError(f"{what} labels must be integer class indices, got {labels.dtype}")
    if predicted_labels.shape[0] != conditioning_labels.shape[0]:
        raise ZooError(f"{predicted_labels.shape[0]} predicted labels for "
                       f"{conditioning_labels.shape[0]} conditioning labels: one per sample")
    if predicted_labels.shape[0] == 0:
        raise ZooError("class consistency needs at least one generated sample")
    matches = predicted_labels.cpu() == conditioning_labels.cpu()
    return matches.double().mean().item()


# --- the standard Inception FID, through torchmetrics --------------------------------------------


def _shape_of(value) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


class _FeatureExtractor(nn.Module):
    """A caller's feature module as torchmetrics expects one: with `num_features`, so that
    torchmetrics does not probe it with a random (1, 3, 299, 299) CPU image, and checked to
    return (N, D) features."""

    def __init__(self, module: nn.Module, num_features: int):
        super().__init__()
        self.module = module
        self.num_features = num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.module(images)
        if not isinstance(features, torch.Tensor) or features.shape != (images.shape[0],
                                                                         self.num_features):
            raise ZooError(f"the feature module must return (N, {self.num_features}) features "
                           f"for N images, got {_shape_of(features)} for {images.shape[0]}")
        return features


def _check_uint8_images(images, what: str) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        got = (f"{images.dtype} tensor of shape {tuple(images.shape)}"
               if isinstance(images, torch.Tensor) else type(images).__name__)
        raise ZooError(f"{what} images must be a uint8 tensor (N, C, H, W) with values 0..255, "
                       f"got {got}")
    if images.shape[0] < 2:
        raise ZooError(f"FID needs at least 2 {what} images, got {images.shape[0]}")


def _module_device(module: nn.Module, default: torch.device) -> torch.device:
    """Where the module's weights live (the images go there), or `default` for a weightless one."""
    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    return default if first is None else first.device


def _feature_count(module: nn.Module, images: torch.Tensor, device: torch.device) -> int:
    """D, from the module's features (1, D) for one of the images."""
    features = module(images[:1].to(device))
    if not isinstance(features, torch.Tensor) or features.ndim != 2 or features.shape[0] != 1:
        raise ZooError(f"the feature module must return (N, D) features for N images, got "
                       f"{_shape_of(features)} for 1")
    return features.shape[1]


def _frechet_inception_metric_class():
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError:
        raise ZooError(f"the Inception FID needs torchmetrics and torch-fidelity: "
                       f"{GEN_EXTRA_HINT}") from None
    return FrechetInceptionDistance


def _inception_metric(feature: int):
    """torchmetrics' FID with Inception v3 features (torch-fidelity's port of the TensorFlow
    network), downloading its weights on first use."""
    FrechetInceptionDistance = _frechet_inception_metric_class()
    try:
        # antialias=False: torch-fidelity's TensorFlow-compatible bilinear resize to 299 x 299,
        # the resize of the original FID code, so values compare with published FIDs
        # (torchmetrics >= 1.8 defaults to an antialiased resize, which shifts FID).
        return FrechetInceptionDistance(feature=feature, normalize=False, antialias=False)
    except ModuleNotFoundError:
        raise ZooError(f"the Inception FID needs torch-fidelity (the Inception v3 network): "
                       f"{GEN_EXTRA_HINT}") from None
    except OSError as error:  # urllib's URLError, HTTPError, timeouts, refused connections
        raise ZooError(f"the standard Inception FID needs the Inception v3 weights from the "
                       f"internet (torch-fidelity downloads them once, to torch's hub cache) and "
                       f"the download failed ({error}); zoo's classifier-feature FID "
                       f"(zoo.tasks.gen_metrics.fid) works offline") from None


def inception_fid(real_images: torch.Tensor, fake_images: torch.Tensor,
                  feature: int | nn.Module = 2048, batch_size: int = 256) -> float:
    """The standard FID of uint8 images (N, C, H, W), computed by torchmetrics'
    FrechetInceptionDistance (`pip install -e ".[gen]"`), `batch_size` images at a time.

    feature=64/192/768/2048 picks an Inception v3 layer (2048, the pool features, is the standard
    FID): the images run on the real images' device, grayscale ones repeated to 3 channels, and
    are resized to 299 x 299 the way the original FID code does. The Inception weights are
    downloaded on first use: offline this raises a ZooError; zoo's `fid` on a zoo classifier's
    features works offline.

    feature=<nn.Module> makes the module the feature extractor (how zoo checks this path
    offline). torchmetrics calls it on the uint8 images exactly as given (normalize=False: no
    cast, no resize, no channel repeat), so the module converts them to what it expects, and it
    must return (N, D) features. It runs in eval mode without gradients (its training flag is
    restored afterwards), on the device of its weights. torchmetrics accumulates the features'
    sums and outer products in float64, computes the FID in float64, and rounds the result to the
    features' dtype (float32 features: ~7 significant digits).
    """
    _check_uint8_images(real_images, "real")
    _check_uint8_images(fake_images, "fake")
    if real_images.shape[1:] != fake_images.shape[1:]:
        raise ZooError(f"real and fake images differ in shape: {tuple(real_images.shape[1:])} "
                       f"vs {tuple(fake_images.shape[1:])} per image")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ZooError(f"batch size must be a positive whole number, got {batch_size!r}")

    if isinstance(feature, nn.Module):
        return _custom_feature_fid(real_images, fake_images, feature, batch_size)
    if type(feature) is not int or feature not in INCEPTION_FEATURE_LAYERS:
        raise ZooError(f"feature must be an Inception layer width "
                       f"{', '.join(map(str, INCEPTION_FEATURE_LAYERS))} or an nn.Module, "
                       f"got {feature!r}")
    if real_images.shape[1] not in (1, 3):
        raise ZooError(f"Inception takes RGB or grayscale images, got {real_images.shape[1]} "
                       f"channels")
    with torch.no_grad():
        metric = _inception_metric(feature).to(real_images.device)
        to_rgb = (lambda batch: batch.expand(-1, 3, -1, -1)) if real_images.shape[1] == 1 else None
        _update_in_batches(metric, real_images, fake_images, batch_size, real_images.device,
                           to_rgb)
        return float(metric.compute())


def _custom_feature_fid(real_images: torch.Tensor, fake_images: torch.Tensor,
                        module: nn.Module, batch_size: int) -> float:
    """torchmetrics' FID with the caller's feature module (see `inception_fid`)."""
    FrechetInceptionDistance = _frechet_inception_metric_class()
    device = _module_device(module, real_images.device)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            extractor = _FeatureExtractor(module, _feature_count(module, real_images, device))
            metric = FrechetInceptionDistance(feature=extractor, normalize=False).to(device)
            _update_in_batches(metric, real_images, fake_images, batch_size, device)
            return float(metric.compute())
    finally:
        module.train(was_training)


def _update_in_batches(metric, real_images: torch.Tensor, fake_images: torch.Tensor,
                       batch_size: int, device: torch.device, transform=None) -> None:
    """Feed both image sets to a torchmetrics FID, `batch_size` images per update."""
    for images, real in ((real_images, True), (fake_images, False)):
        for start in range(0, images.shape[0], batch_size):
            batch = images[start:start + batch_size].to(device)
            metric.update(transform(batch) if transform else batch, real=real)
