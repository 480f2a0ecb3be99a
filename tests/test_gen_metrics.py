"""Generator metrics (zoo.tasks.gen_metrics): FID, improved precision/recall, class consistency,
and the torchmetrics Inception FID (checked offline with a small custom feature module)."""

from __future__ import annotations

import math
import sys
import urllib.error

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from zoo.errors import ZooError
from zoo.tasks.gen_metrics import (
    class_consistency,
    feature_statistics,
    fid,
    frechet_distance,
    inception_fid,
    precision_recall,
)


def gaussian(n: int, dim: int, seed: int, mean=0.0, std=1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=generator, dtype=torch.float64) * std + mean


def random_spd(dim: int, seed: int) -> np.ndarray:
    factor = np.random.default_rng(seed).normal(size=(dim, dim))
    return factor @ factor.T + 0.1 * np.eye(dim)


# --- feature statistics ---------------------------------------------------------------------------


def test_feature_statistics_are_the_float64_mean_and_unbiased_covariance():
    features = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 4.0]], dtype=torch.float32)
    mean, covariance = feature_statistics(features)
    assert mean.dtype == covariance.dtype == np.float64
    np.testing.assert_allclose(mean, [3.0, 4.0])
    # deviations (-2, -2), (0, 2), (2, 0): sums of products / (n - 1)
    np.testing.assert_allclose(covariance, [[4.0, 2.0], [2.0, 4.0]])


def test_feature_statistics_of_one_feature_is_a_1x1_covariance():
    mean, covariance = feature_statistics(torch.tensor([[1.0], [3.0]]))
    assert mean.shape == (1,) and covariance.shape == (1, 1)
    assert covariance[0, 0] == pytest.approx(2.0)


# --- the Fréchet distance -------------------------------------------------------------------------


def test_frechet_distance_of_commuting_diagonal_covariances_by_hand():
    # ||(0,0,0) - (1,2,2)||^2 = 9; Tr S1 + Tr S2 = 14 + 5; Tr sqrt(S1 S2) = sqrt(4) + sqrt(4) + 0
    value = frechet_distance(np.zeros(3), np.diag([1.0, 4.0, 9.0]),
                             np.array([1.0, 2.0, 2.0]), np.diag([4.0, 1.0, 0.0]))
    assert value == pytest.approx(9 + 19 - 2 * 4, rel=1e-12)


def test_frechet_distance_of_non_commuting_covariances_matches_scipy_sqrtm():
    sigma1, sigma2 = random_spd(6, seed=1), random_spd(6, seed=2)
    assert not np.allclose(sigma1 @ sigma2, sigma2 @ sigma1)
    mu1, mu2 = np.arange(6.0), np.ones(6)
    expected = (np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2)
                - 2 * np.trace(scipy.linalg.sqrtm(sigma1 @ sigma2)).real)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_accepts_tensors():
    sigma = torch.eye(2, dtype=torch.float64)
    assert frechet_distance(torch.zeros(2), sigma, torch.ones(2), sigma) == pytest.approx(2.0)


# --- FID ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, dim", [(2000, 32), (40, 100)],
                         ids=["full-rank", "fewer-samples-than-features"])
def test_fid_of_a_set_against_itself_is_zero(n, dim):
    features = gaussian(n, dim, seed=0, mean=5.0, std=3.0)
    scale = float(np.trace(feature_statistics(features)[1]))
    assert 0.0 <= fid(features, features) < 1e-6 * scale


def test_fid_of_gaussian_samples_matches_the_closed_form_of_the_true_distributions():
    dim, n = 4, 50_000
    mu1, mu2 = torch.tensor([0.0, 1.0, 0.0, -1.0]), torch.tensor([0.5, 0.0, 0.0, 1.0])
    var1, var2 = torch.tensor([1.0, 4.0, 0.25, 2.0]), torch.tensor([2.0, 1.0, 0.25, 0.5])
    real = gaussian(n, dim, seed=1) * var1.sqrt() + mu1
    fake = gaussian(n, dim, seed=2) * var2.sqrt() + mu2
    # diagonal covariances commute: Tr sqrt(S1 S2) = sum sqrt(s1 s2)
    exact = float(((mu1 - mu2) ** 2).sum() + (var1 + var2 - 2 * (var1 * var2).sqrt()).sum())
    assert exact == pytest.approx(5.25 + (3 - 2 * math.sqrt(2)) + (5 - 4) + 0 + (2.5 - 2))
    # the estimate's sampling standard deviation is ~0.05 at this n (and its bias ~0.01)
    assert fid(real, fake) == pytest.approx(exact, abs=0.2)


def test_fid_is_symmetric():
    real, fake = gaussian(300, 16, seed=3), gaussian(200, 16, seed=4, std=2.0)
    assert fid(real, fake) == pytest.approx(fid(fake, real), rel=1e-10)


def test_fid_of_a_shifted_copy_is_the_squared_shift_and_grows_with_it():
    features = gaussian(500, 8, seed=5)
    shifts = [0.0, 0.5, 1.0, 2.0]
    values = [fid(features, features + shift) for shift in shifts]
    assert values == pytest.approx([8 * shift**2 for shift in shifts], abs=1e-9)
    assert values == sorted(values)


def test_fid_is_never_negative_for_rank_deficient_covariances():
    for seed in range(5):
        assert fid(gaussian(10, 50, seed=seed), gaussian(10, 50, seed=seed + 100)) >= 0.0


def test_fid_accepts_float32_features():
    real, fake = gaussian(100, 4, seed=6), gaussian(100, 4, seed=7, mean=1.0)
    assert fid(real.float(), fake.float()) == pytest.approx(fid(real, fake), rel=1e-5)


# --- improved precision and recall ----------------------------------------------------------------


def test_precision_recall_of_identical_sets_is_one_one():
    features = gaussian(200, 16, seed=8)
    assert precision_recall(features, features.clone()) == (1.0, 1.0)


def test_precision_recall_of_a_far_away_fake_set_is_zero_zero():
    real = gaussian(200, 16, seed=9)
    assert precision_recall(real, gaussian(200, 16, seed=10, mean=1000.0)) == (0.0, 0.0)


def test_a_fake_set_covering_half_the_real_modes_has_full_precision_and_half_recall():
    centres = 100.0 * torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]],
                                   dtype=torch.float64)
    real = torch.cat([centre + gaussian(300, 2, seed=20 + i) for i, centre in enumerate(centres)])
    fake = torch.cat([centre + gaussian(300, 2, seed=30 + i)
                      for i, centre in enumerate(centres[:2])])
    precision, recall = precision_recall(real, fake)
    assert precision > 0.9  # fresh samples of a mode mostly fall in its k-NN balls
    assert recall == pytest.approx(0.5, abs=0.05)  # the two missing modes are not covered


def test_precision_recall_on_points_with_known_neighbour_radii():
    real = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    fake = torch.tensor([[-2.0], [4.0], [10.0], [12.0]])
    # k=1, real radii 1, 1, 2, 4: the manifold [-1, 1] u [0, 2] u [1, 5] u [3, 11] = [-1, 11]
    # holds 4 and 10, not -2 nor 12. Fake radii 6, 6, 2, 2: [-8, 4] u [-2, 10] u ... holds every
    # real point.
    assert precision_recall(real, fake, k=1) == (0.5, 1.0)
    # k=2, real radii 3, 2, 3, 6: [-3, 3] u [-1, 3] u [0, 6] u [1, 13] = [-3, 13] holds every fake.
    assert precision_recall(real, fake, k=2) == (1.0, 1.0)
    # Swapping the sets swaps precision and recall.
    assert precision_recall(fake, real, k=1) == (1.0, 0.5)


def test_a_point_is_not_its_own_nearest_neighbour():
    # k=1 radii 10, 10, 1, 1: the manifold is [-10, 20] u [29, 32]; 15 and 30.5 are inside it,
    # 25 and -12 are not. Counting each point as its own neighbour would give radii 0 and 0 inside.
    real = torch.tensor([[0.0], [10.0], [30.0], [31.0]])
    fake = torch.tensor([[15.0], [25.0], [30.5], [-12.0]])
    precision, _ = precision_recall(real, fake, k=1)
    assert precision == 0.5


def test_precision_recall_is_blocked_without_changing_the_result(monkeypatch):
    real, fake = gaussian(150, 8, seed=11), gaussian(120, 8, seed=12, mean=0.3)
    whole = precision_recall(real, fake)
    monkeypatch.setattr("zoo.tasks.gen_metrics.DISTANCE_BLOCK_ELEMENTS", 500)  # ~3 rows a block
    assert precision_recall(real, fake) == whole


# --- class consistency ----------------------------------------------------------------------------


def test_class_consistency_is_the_accuracy_on_the_conditioning_labels():
    predicted = torch.tensor([0, 1, 2, 2])
    conditioning = torch.tensor([0, 1, 1, 2])
    assert class_consistency(predicted, conditioning) == 0.75
    assert class_consistency(conditioning, conditioning) == 1.0


def test_class_consistency_refuses_mismatched_or_non_label_input():
    with pytest.raises(ZooError, match="3 predicted labels for 4 conditioning labels"):
        class_consistency(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ZooError, match=r"got \(4, 3\) \(for logits, pass logits.argmax\(1\)\)"):
        class_consistency(torch.zeros(4, 3), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ZooError, match="integer class indices, got torch.float32"):
        class_consistency(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]))
    with pytest.raises(ZooError, match="at least one generated sample"):
        class_consistency(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))


# --- bad input ------------------------------------------------------------------------------------


def test_metrics_refuse_bad_features():
    features = gaussian(10, 4, seed=13)
    with pytest.raises(ZooError, match="differ in dimension: 4 vs 3"):
        fid(features, features[:, :3])
    with pytest.raises(ZooError, match="differ in dimension: 4 vs 5"):
        precision_recall(features, gaussian(10, 5, seed=14))
    with pytest.raises(ZooError, match="at least 2 samples, got 1"):
        fid(features, features[:1])
    with pytest.raises(ZooError, match=r"shape \(samples, features\), got \(10,\)"):
        fid(features[:, 0], features[:, 0])
    with pytest.raises(ZooError, match="NaN or inf"):
        fid(features, torch.full((10, 4), float("nan")))
    with pytest.raises(ZooError, match="k=3 nearest neighbours need more than 3 fake samples"):
        precision_recall(features, features[:3])
    with pytest.raises(ZooError, match="k=10 nearest neighbours need more than 10 real samples"):
        precision_recall(features, features, k=10)
    with pytest.raises(ZooError, match="k .nearest neighbours. must be a positive whole number"):
        precision_recall(features, features, k=0)


def test_frechet_distance_refuses_inconsistent_statistics():
    with pytest.raises(ZooError, match="vectors of the same length"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ZooError, match=r"sigma2 must have shape \(3, 3\)"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
    with pytest.raises(ZooError, match="sigma1 is not symmetric"):
        frechet_distance(np.zeros(2), np.array([[1.0, 1.0], [0.0, 1.0]]), np.zeros(2), np.eye(2))
    with pytest.raises(ZooError, match="sigma2 has negative eigenvalues"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([1.0, -1.0]))


# --- the torchmetrics Inception FID ---------------------------------------------------------------


class TinyFeatures(nn.Module):
    """A small feature extractor for uint8 grayscale images; BatchNorm makes train and eval mode
    differ."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.norm = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 6)
        with torch.no_grad():
            self.norm.running_mean.fill_(0.1)
            self.norm.running_var.fill_(2.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255  # torchmetrics passes the uint8 images through unchanged
        return self.head(torch.relu(self.norm(self.conv(x))).mean(dim=(2, 3)))


def uint8_images(n: int, high: int, seed: int, channels: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (n, channels, 8, 8), generator=generator, dtype=torch.uint8)


def test_inception_fid_with_a_custom_feature_module_equals_zoo_fid_on_its_features():
    pytest.importorskip("torchmetrics")
    torch.manual_seed(0)
    module = TinyFeatures().train()
    real, fake = uint8_images(100, 256, seed=1), uint8_images(90, 160, seed=2)
    value = inception_fid(real, fake, feature=module, batch_size=16)
    assert module.training  # evaluated in eval mode, its mode restored
    with torch.no_grad():
        expected = fid(module.eval()(real), module(fake))
    assert expected > 0.001
    # torchmetrics computes in float64 but rounds the FID to the features' dtype, float32
    assert value == pytest.approx(expected, rel=1e-5)


def test_inception_fid_refuses_a_module_with_non_matrix_features():
    pytest.importorskip("torchmetrics")
    flatten_all = nn.Flatten(0)  # one vector for the whole batch
    with pytest.raises(ZooError, match=r"must return \(N, D\) features for N images, got \(64,\)"):
        inception_fid(uint8_images(4, 256, 3), uint8_images(4, 256, 4), feature=flatten_all)


class RecordingFID:
    """Stands in for torchmetrics' FrechetInceptionDistance: records what it is given."""

    created: list[dict] = []
    updates: list[tuple[tuple, torch.dtype, bool]] = []

    def __init__(self, **kwargs):
        RecordingFID.created.append(kwargs)

    def to(self, device):
        return self

    def update(self, images, real):
        RecordingFID.updates.append((tuple(images.shape), images.dtype, real))

    def compute(self):
        return torch.tensor(12.5)


@pytest.fixture
def recording_fid(monkeypatch):
    fid_module = pytest.importorskip("torchmetrics.image.fid")
    RecordingFID.created, RecordingFID.updates = [], []
    monkeypatch.setattr(fid_module, "FrechetInceptionDistance", RecordingFID)
    return RecordingFID


def test_inception_fid_feeds_inception_rgb_uint8_batches(recording_fid):
    value = inception_fid(uint8_images(5, 256, seed=5), uint8_images(3, 256, seed=6),
                          batch_size=2)
    assert value == 12.5
    # the TensorFlow-compatible resize of the original FID, not torchmetrics' antialiased default
    assert recording_fid.created == [{"feature": 2048, "normalize": False, "antialias": False}]
    assert recording_fid.updates == [  # grayscale repeated to 3 channels, 2 images at a time
        ((2, 3, 8, 8), torch.uint8, True), ((2, 3, 8, 8), torch.uint8, True),
        ((1, 3, 8, 8), torch.uint8, True),
        ((2, 3, 8, 8), torch.uint8, False), ((1, 3, 8, 8), torch.uint8, False)]


def test_inception_fid_offline_says_the_weights_come_from_the_internet(monkeypatch):
    fid_module = pytest.importorskip("torchmetrics.image.fid")

    def offline(**kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(fid_module, "FrechetInceptionDistance", offline)
    with pytest.raises(ZooError, match="needs the Inception v3 weights from the internet.*"
                                       "zoo's classifier-feature FID .* works offline") as error:
        inception_fid(uint8_images(4, 256, seed=7), uint8_images(4, 256, seed=8))
    assert "\n" not in str(error.value) and error.value.__suppress_context__


def test_inception_fid_without_torch_fidelity_says_how_to_install_it(monkeypatch):
    fid_module = pytest.importorskip("torchmetrics.image.fid")

    def no_fidelity(**kwargs):
        raise ModuleNotFoundError("FrechetInceptionDistance metric requires that `Torch-fidelity`")

    monkeypatch.setattr(fid_module, "FrechetInceptionDistance", no_fidelity)
    with pytest.raises(ZooError, match=r'torch-fidelity .*: pip install -e "\.\[gen\]"'):
        inception_fid(uint8_images(4, 256, seed=7), uint8_images(4, 256, seed=8))


def test_inception_fid_without_torchmetrics_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchmetrics", None)  # makes `import torchmetrics` fail
    monkeypatch.setitem(sys.modules, "torchmetrics.image.fid", None)
    with pytest.raises(ZooError, match=r'and torch-fidelity: pip install -e "\.\[gen\]"'):
        inception_fid(uint8_images(4, 256, 7), uint8_images(4, 256, 8), feature=TinyFeatures())


@pytest.mark.parametrize("real, fake, kwargs, message", [
    (uint8_images(4, 256, 0).float(), uint8_images(4, 256, 1), {},
     r"real images must be a uint8 tensor \(N, C, H, W\).*got torch.float32"),
    (uint8_images(4, 256, 0)[:, 0], uint8_images(4, 256, 1), {},
     r"got torch.uint8 tensor of shape \(4, 8, 8\)"),
    (uint8_images(4, 256, 0), uint8_images(1, 256, 1), {}, "at least 2 fake images, got 1"),
    (uint8_images(4, 256, 0), uint8_images(4, 256, 1, channels=3), {}, "differ in shape"),
    (uint8_images(4, 256, 0), uint8_images(4, 256, 1), {"feature": 100},
     "Inception layer width 64, 192"),
    (uint8_images(4, 256, 0), uint8_images(4, 256, 1), {"feature": 2048.0}, "got 2048.0"),
    (uint8_images(4, 256, 0, channels=2), uint8_images(4, 256, 1, channels=2), {},
     "got 2 channels"),
    (uint8_images(4, 256, 0), uint8_images(4, 256, 1), {"batch_size": 0},
     "batch size must be a positive"),
], ids=["float", "3-d", "one-image", "shapes", "layer", "float-layer", "channels", "batch-size"])
def test_inception_fid_refuses_bad_input(real, fake, kwargs, message):
    with pytest.raises(ZooError, match=message):
        inception_fid(real, fake, **kwargs)
