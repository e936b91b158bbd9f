"""Training: augmentation keeps images and labels aligned and respects 'not annotated'; patch crops;
mixed-precision training."""

import numpy as np
import pytest
import torch

from annotomo import TrainConfig, train
from annotomo.conventions import NOT_ANNOTATED
from annotomo.device import cpu_has_fast_bf16
from annotomo.modelfile import load_model, read_model_info
from annotomo.training.augment import augment, vary_imaging, warp_margin, warp_patches
from annotomo.training.losses import cross_entropy_and_dice


def _band_patches(n, size, width=6):
    """Patches with a horizontal band through the centre: image 1 where the label is 1."""
    yy = np.arange(size)[:, None] - (size - 1) / 2
    lab = np.broadcast_to((np.abs(yy) < width / 2) & np.ones((1, size), bool), (n, size, size)).astype(np.uint8)
    return lab[:, None].astype(np.float32), lab.copy()


def test_warped_patches_keep_images_and_labels_aligned_at_any_angle():
    patch = 48
    size = patch + 2 * warp_margin(patch, 1.2)
    img, lab = _band_patches(64, size)
    out_i, out_l = warp_patches(img, lab, patch, np.random.default_rng(0), 1.2)
    assert out_i.shape == (64, 1, patch, patch) and out_l.shape == (64, patch, patch) and out_l.dtype == np.uint8
    assert np.mean((out_i[:, 0] > 0.5) == (out_l == 1)) > 0.99
    # Not only the 4 right angles: the band's orientation (from its second moments) takes many values.
    angles = []
    for band in out_l:
        y, x = np.nonzero(band)
        cov = np.cov(np.stack([x, y]))
        angles.append(np.degrees(0.5 * np.arctan2(2 * cov[0, 1], cov[0, 0] - cov[1, 1])) % 180)
    assert len(np.unique(np.round(angles, -1))) >= 10
    # The band stays through the centre (rotation and scaling about the patch centre).
    assert (out_l[:, patch // 2 - 1 : patch // 2 + 1, patch // 2 - 1 : patch // 2 + 1] == 1).all()


def test_a_margin_only_adds_pixels_around_the_same_patch(small_pair):
    """Patches to be warped are cropped with a margin, the others without; from the same draws both are
    the same patch at their centre."""
    from annotomo.training.data import PatchSampler, load_annotated

    sim = small_pair[0]
    data = [load_annotated(sim.tomogram, sim.labels, len(sim.class_names))]
    patch, m = 32, warp_margin(32, 1.15)
    plain = PatchSampler(data, 5, patch, 1, np.random.default_rng(1), margin=m).batch(6)
    wide = PatchSampler(data, 5, patch, 1, np.random.default_rng(1), margin=m).batch(6, m)
    assert plain[0].shape == (6, 3, patch, patch) and wide[0].shape == (6, 3, patch + 2 * m, patch + 2 * m)
    assert np.array_equal(wide[0][..., m : m + patch, m : m + patch], plain[0])
    assert np.array_equal(wide[1][..., m : m + patch, m : m + patch], plain[1])
    assert PatchSampler(data, 5, patch, 1, np.random.default_rng(1)).batch(0, m)[0].shape == (0, 3, 56, 56)


def test_not_annotated_stays_not_annotated_through_augmentation():
    patch = 40
    size = patch + 2 * warp_margin(patch, 1.15)
    rng = np.random.default_rng(2)
    lab = np.full((16, size, size), NOT_ANNOTATED, np.uint8)
    lab[:, : size // 2] = rng.integers(0, 3, (16, size // 2, size)).astype(np.uint8)
    img = rng.normal(size=(16, 1, size, size)).astype(np.float32)
    out_i, out_l = augment(*warp_patches(img, lab, patch, rng, 1.15), rng)
    assert set(np.unique(out_l)) <= {0, 1, 2, NOT_ANNOTATED}
    assert 0.3 < np.mean(out_l == NOT_ANNOTATED) < 0.7  # about half, whatever the rotation


def test_augmentation_turns_images_and_labels_together_and_varies_intensity():
    rng = np.random.default_rng(3)
    lab = rng.integers(0, 4, (64, 24, 24)).astype(np.uint8)
    img = np.repeat(lab[:, None].astype(np.float32), 3, axis=1)  # 3 context slices, each = the labels
    out_i, out_l = augment(img, lab, rng)
    orientations = set()
    for b in range(len(lab)):
        for k in range(4):
            for flip in (False, True):
                turned = np.rot90(lab[b], k)
                if np.array_equal(turned[:, ::-1] if flip else turned, out_l[b]):
                    orientations.add((k, flip))
        # the image is a * labels + b (+ noise): it correlates with the labels it came with
        assert np.corrcoef(out_i[b, 1].ravel(), out_l[b].ravel())[0, 1] > 0.6
    assert len(orientations) == 8  # all rotations and flips occur
    gains = [np.polyfit(out_l[b].ravel(), out_i[b, 0].ravel(), 1)[0] for b in range(len(lab))]
    assert 0.7 < min(gains) < 0.9 and 1.15 < max(gains) < 1.35


def test_z_flips_reverse_the_context_slices_of_the_chosen_share_of_patches():
    rng = np.random.default_rng(4)
    lab = rng.integers(0, 4, (200, 8, 8)).astype(np.uint8)
    img = (np.arange(5, dtype=np.float32)[None, :, None, None] * 10 + lab[:, None]).astype(np.float32)
    for fraction, low, high in ((0.0, 0, 0), (0.5, 0.35, 0.65), (1.0, 1, 1)):
        out_i, out_l = augment(img, lab, np.random.default_rng(5), fraction)
        # the slices' order survives gain, offset and noise: the slope along the context axis says it
        slopes = np.array([np.polyfit(np.arange(5), out_i[b].mean(axis=(1, 2)), 1)[0] for b in range(len(lab))])
        reversed_share = np.mean(slopes < 0)
        assert low <= reversed_share <= high
        assert np.all(np.abs(slopes) > 5)  # each patch is a whole stack, in one order or the other


def test_imaging_variation_blurs_in_plane_and_adds_noise_correlated_along_z():
    rng = np.random.default_rng(6)
    base = rng.standard_normal((40, 5, 48, 48)).astype(np.float32)

    def neighbour_correlation(x, axis):
        a, b = np.moveaxis(x, axis, 0)[:-1], np.moveaxis(x, axis, 0)[1:]
        return np.corrcoef(a.ravel(), b.ravel())[0, 1]

    untouched = vary_imaging(base.copy(), rng, 0.0, 0.0)
    assert np.array_equal(untouched, base)

    blurred = vary_imaging(base.copy(), rng, blur_fraction=1.0)
    for b in range(len(base)):  # a low-pass: neighbouring pixels correlate and the spread falls
        assert neighbour_correlation(blurred[b], 2) > 0.2 and blurred[b].std() < 0.8 * base[b].std()
    point = np.zeros((4, 5, 48, 48), np.float32)
    point[:, 2, 24, 24] = 1.0
    spread = vary_imaging(point.copy(), rng, blur_fraction=1.0)
    assert np.all(spread[:, [0, 1, 3, 4]] == 0)  # in the slice plane only: context slices do not mix
    assert np.all(spread[:, 2, 24, 25] > 0.05) and np.allclose(spread.sum(axis=(1, 2, 3)), 1.0, atol=1e-3)

    flat = np.zeros_like(base) + rng.standard_normal((40, 1, 1, 1)).astype(np.float32)
    flat += 0.01 * rng.standard_normal(flat.shape).astype(np.float32)  # a spread of 0.01 per patch
    noisy = vary_imaging(flat.copy(), rng, noise_fraction=0.5)
    added = noisy - flat
    changed = [b for b in range(len(flat)) if np.abs(added[b]).max() > 0]
    assert 10 <= len(changed) <= 30  # about half the patches
    for b in changed:  # 0.2-1.0 of the patch's own spread, correlated more along z than in-plane
        assert 0.002 * 0.9 < added[b].std() < 0.01 * 1.1
        assert neighbour_correlation(added[b], 0) > neighbour_correlation(added[b], 2) > 0.2


def test_loss_is_weighted_cross_entropy_plus_soft_dice_over_annotated_pixels():
    """The training loss against its definition written the plain way (one-hot products), values and
    gradients, with unannotated pixels and a class absent from the batch."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 16, 16, generator=gen)
    y = torch.randint(0, 4, (3, 16, 16), generator=gen)  # class 4 absent
    y[:, :3] = NOT_ANNOTATED
    weights = torch.tensor([0.5, 1.0, 2.0, 1.5, 3.0])

    def plain(z):
        ce = torch.nn.functional.cross_entropy(z, y, weight=weights, ignore_index=NOT_ANNOTATED)
        annotated = (y != NOT_ANNOTATED).unsqueeze(1)
        prob = torch.softmax(z, 1)[:, 1:] * annotated
        onehot = torch.nn.functional.one_hot(torch.where(annotated[:, 0], y, 0), 5).permute(0, 3, 1, 2)[:, 1:]
        inter, denom = (prob * onehot).sum((0, 2, 3)), prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
        present = onehot.sum((0, 2, 3)) > 0
        assert present.tolist() == [True, True, True, False]
        return ce + 0.7 * (1 - ((2 * inter + 1) / (denom + 1))[present].mean())

    a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    expected, got = plain(a), cross_entropy_and_dice(lambda x: x, b, y, weights, 0.7)
    expected.backward()
    got.backward()
    assert torch.allclose(got, expected, rtol=1e-6) and torch.allclose(b.grad, a.grad, rtol=1e-4, atol=1e-8)


def test_patch_crops_match_a_padded_volume_wherever_they_hang_over_the_edges():
    from annotomo.training.data import crop

    rng = np.random.default_rng(2)
    vol = rng.normal(size=(6, 30, 40)).astype(np.float32)
    lab = rng.integers(0, 5, vol.shape).astype(np.uint8)
    pad = 200
    reflected = np.pad(vol, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")  # mirror without edge repeat
    filled = np.pad(lab, ((0, 0), (pad, pad), (pad, pad)), constant_values=NOT_ANNOTATED)
    for _ in range(300):
        size = int(rng.integers(1, 100))
        y0, x0 = int(rng.integers(-120, 60)), int(rng.integers(-120, 80))
        zs = np.clip(np.arange(-2, 3) + int(rng.integers(0, 6)), 0, 5)
        window = (slice(pad + y0, pad + y0 + size), slice(pad + x0, pad + x0 + size))
        assert np.array_equal(crop(vol, zs, y0, x0, size, 0.0, reflect=True), reflected[(zs, *window)])
        assert np.array_equal(crop(lab, zs[:1], y0, x0, size, NOT_ANNOTATED, reflect=False), filled[(zs[:1], *window)])


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_learns_at_each_precision_and_says_which_it_used(tmp_path, small_pair, precision):
    if precision == "bf16" and not cpu_has_fast_bf16():
        pytest.skip("bf16 convolutions are very slow on CPUs without AMX or AVX512-BF16")
    sim = small_pair[0]
    out = tmp_path / "m.annotomo"
    config = TrainConfig(
        iterations=90,
        epoch_iterations=30,
        patch=64,
        batch_size=4,
        context_slices=3,
        precision=precision,
        arch_params=dict(widths=(16, 24, 32, 48)),
    )
    result = train(
        [sim.tomogram], [sim.labels], list(sim.class_names), out, config, progress=False, log=lambda *a: None
    )
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    trained = read_model_info(out).provenance["config"]
    assert trained["precision"] == precision
    # training takes a GPU when there is one
    assert trained["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    model, _ = load_model(out)  # weights are stored in float32 whatever the training precision
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_resumed_optimiser_moments_have_the_layout_of_their_parameters(tmp_path):
    """The fused AdamW kernel on CUDA refuses moments whose strides differ from their (channels-last)
    parameters': resuming on a GPU failed so before the moments were restrided on loading."""
    from annotomo.modelfile import ModelInfo
    from annotomo.models import build_model
    from annotomo.training import checkpoint

    model, params = build_model("unet", 3, 5, widths=(8, 12, 16, 24))
    model = model.to(memory_format=torch.channels_last)
    info = ModelInfo(
        arch="unet", arch_params=params, class_names=["a", "b", "c", "d"], context_slices=3, pixel_size=None
    )
    optimizer = torch.optim.AdamW(model.parameters(), fused=True)
    model(torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)).sum().backward()
    optimizer.step()
    state = dict(iteration=1, elapsed=1.0, history=[], best=None)
    checkpoint.save_checkpoint(tmp_path / "c", model, optimizer, info, state)

    resumed_model, _ = build_model("unet", 3, 5, widths=(8, 12, 16, 24))
    resumed_model = resumed_model.to(memory_format=torch.channels_last)
    resumed = torch.optim.AdamW(resumed_model.parameters(), fused=True)
    checkpoint.load_checkpoint(tmp_path / "c", resumed_model, resumed, info)
    convolutions = 0
    for param, saved in zip(resumed_model.parameters(), model.parameters(), strict=True):
        moments = resumed.state[param]
        for key in ("exp_avg", "exp_avg_sq"):
            assert moments[key].stride() == param.stride(), key
            assert torch.equal(moments[key], optimizer.state[saved][key])
        convolutions += param.dim() == 4 and not param.is_contiguous()
    assert convolutions > 0  # the layouts do differ from the file's


@pytest.mark.slow
def test_batches_made_in_the_background_are_the_batches_made_inline(tmp_path, small_pair):
    """Prefetching (the default on GPUs) changes when batches are made, never which: same seed, same model."""
    from annotomo.training.batches import BatchMaker

    sim = small_pair[0]
    weights = {}
    for depth in (0, 2):
        out = tmp_path / f"m{depth}.annotomo"
        # on the CPU: GPU training is not bit-reproducible
        config = TrainConfig(
            iterations=40,
            epoch_iterations=20,
            patch=64,
            batch_size=4,
            context_slices=3,
            precision="fp32",
            prefetch_batches=depth,
            device="cpu",
            arch_params=dict(widths=(8, 12, 16, 24)),
        )
        train([sim.tomogram], [sim.labels], list(sim.class_names), out, config, progress=False, log=lambda *a: None)
        weights[depth] = load_model(out)[0].state_dict()
    assert all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])

    def failing():
        raise OSError("disk gone")

    with BatchMaker(failing, 2) as batches, pytest.raises(OSError, match="disk gone"):
        batches.next()  # an error while making a batch reaches the training loop


@pytest.mark.slow
def test_fine_tuning_stops_at_its_iteration_limit_and_says_so(tmp_path, small_pair):
    """Fine-tuning a model that knows every feature stops at 2000 iterations per 64 x 256 x 256 annotated
    voxels (at least 2000) when the minutes would last longer; a new network trains the minutes."""
    from helpers import save_untrained_model

    from annotomo.training.loop import _resolve_max_iterations

    parent = read_model_info(save_untrained_model(tmp_path / "parent.annotomo"))
    names = list(parent.class_names)

    class Data:  # what the rule reads of the training data: its labels
        def __init__(self, shape, annotated_slices=None):
            self.labels = np.zeros(shape, np.uint8)
            if annotated_slices is not None:
                self.labels[:] = NOT_ANNOTATED
                self.labels[annotated_slices] = 0

    said = []
    one_cell = [Data((64, 256, 256))]
    assert _resolve_max_iterations(TrainConfig(), parent, names, one_cell, said.append).max_iterations == 2000
    assert "stops after 2000 iterations" in said[0] and "--max-iterations 0" in said[0]
    four = [Data((64, 256, 256))] * 4
    assert _resolve_max_iterations(TrainConfig(), parent, names, four, said.append).max_iterations == 8000
    painted = [Data((64, 256, 256), annotated_slices=[4, 20, 40])]
    assert _resolve_max_iterations(TrainConfig(), parent, names, painted, said.append).max_iterations == 2000
    for kept in (0, 50):  # as given
        assert (
            _resolve_max_iterations(TrainConfig(max_iterations=kept), parent, names, one_cell, print).max_iterations
            == kept
        )
    assert _resolve_max_iterations(TrainConfig(), None, names, one_cell, print).max_iterations == 0  # new network
    with_new = [*names, "actin"]  # a feature the parent lacks: trained as a new output, no limit
    assert _resolve_max_iterations(TrainConfig(), parent, with_new, one_cell, print).max_iterations == 0

    # In training: the limit ends a minutes budget early.
    s = small_pair[0]
    messages = []
    result = train(
        [s.tomogram],
        [s.labels],
        names,
        tmp_path / "tuned.annotomo",
        TrainConfig(minutes=10, max_iterations=12, epoch_iterations=4, patch=32, batch_size=2, validation_slices=2),
        init=tmp_path / "parent.annotomo",
        progress=False,
        log=messages.append,
    )
    assert result.iterations == 12 and result.seconds < 120
    assert read_model_info(tmp_path / "tuned.annotomo").provenance["config"]["max_iterations"] == 12


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_unets_fold_and_unfold_are_pixel_unshuffle_and_shuffle_in_any_layout(layout):
    """The U-Net's own space-to-depth (one copy into channels-last memory, the fast path on CPUs) moves
    every value where pixel_unshuffle puts it, and back, with gradients: saved models stay valid."""
    from torch.nn import functional as F

    from annotomo.models.unet import depth_to_space, space_to_depth

    x = torch.randn(2, 5, 16, 24).contiguous(memory_format=layout).requires_grad_()
    folded = space_to_depth(x, 4)
    assert torch.equal(folded, F.pixel_unshuffle(x, 4))
    assert folded.is_contiguous(memory_format=torch.channels_last)
    back = depth_to_space(folded.contiguous(memory_format=torch.channels_last), 4)
    assert torch.equal(back, x) and back.is_contiguous()
    assert torch.equal(depth_to_space(folded, 4), F.pixel_shuffle(folded, 4))
    back.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
