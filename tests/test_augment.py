"""Augmentation on the device: each transform does what it says, off means untouched, training uses it."""

import torch

from engine.data.prepare import prepare_builtin
from engine.templates import build
from engine.train import TrainConfig, fit
from engine.train.augment import active, augment


def cfg(**kw):
    return TrainConfig(**kw)


def test_off_is_the_identity_and_shapes_are_kept():
    x = torch.rand(8, 3, 12, 12)
    assert not active(cfg())
    assert torch.equal(augment(x, cfg()), x)
    for settings in ({"flip": True}, {"crop_padding": 3}, {"rotation": 20}, {"noise": 0.1}):
        assert augment(x, cfg(**settings), torch.Generator().manual_seed(0)).shape == x.shape


def test_flip_mirrors_some_images_exactly():
    x = torch.rand(64, 1, 5, 7)
    out = augment(x, cfg(flip=True), torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, x, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and 10 < sum(flipped) < 54


def test_crop_with_padding_shifts_content_within_the_padding():
    x = torch.zeros(32, 1, 9, 9)
    x[:, :, 4, 4] = 1.0  # one bright pixel in the centre
    out = augment(x, cfg(crop_padding=2), torch.Generator().manual_seed(1))
    positions = [tuple((o[0] == 1).nonzero()[0].tolist()) for o in out]
    assert all(abs(r - 4) <= 2 and abs(c - 4) <= 2 for r, c in positions)
    assert len(set(positions)) > 5  # different offsets per image
    assert torch.allclose(out.sum((1, 2, 3)), torch.ones(32))  # nothing else changes


def test_rotation_and_noise():
    x = torch.zeros(16, 1, 21, 21)
    x[:, :, 10, 2:19] = 1.0  # a horizontal bar
    out = augment(x, cfg(rotation=40), torch.Generator().manual_seed(2))
    assert not torch.allclose(out, x) and (out.sum((1, 2, 3)) > 5).all()
    noisy = augment(torch.zeros(4000, 10), cfg(noise=0.2), torch.Generator().manual_seed(3))
    assert abs(noisy.std().item() - 0.2) < 0.01


def test_training_with_augmentation_still_learns():
    ds = prepare_builtin("digits")
    result = fit(
        build("lenet", ds.meta),
        ds,
        TrainConfig(epochs=12, lr=0.003, crop_padding=1, rotation=10),
        emit=lambda e: None,
    )
    # 0.81 measured at seed 0 (0.98 without): shifting and turning 8×8 digits is harsh, but it learns.
    assert result["metrics"]["val/accuracy"] > 0.75
