"""Transforms: output shapes and dtypes for 256x128 and 128x64, train and eval; the batched version."""
import numpy as np
import pytest
import torch
from PIL import Image

from reid_utils.data import IMAGENET_MEAN, IMAGENET_STD, batch_augment, build_transforms, normalize_batch
from reid_utils.errors import ConfigError

torch.set_num_threads(1)

NO_AUGMENT = dict(flip=False, rotation=0, blur=0, sharpness=0, pad=0, erasing=0)


def course_image(seed=0) -> Image.Image:
    """A 64x128 (W x H) RGB image, the course size."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (128, 64, 3), dtype=np.uint8))


@pytest.mark.parametrize("height, width", [(256, 128), (128, 64)])
@pytest.mark.parametrize("train", [True, False])
def test_output_shapes(height, width, train):
    torch.manual_seed(0)
    transform = build_transforms(height, width, train=train)
    image = course_image()
    for source in (image, torch.from_numpy(np.array(image)).permute(2, 0, 1)):  # PIL or uint8 tensor
        out = transform(source)
        assert out.shape == (3, height, width) and out.dtype == torch.float32
        assert torch.isfinite(out).all()


def test_eval_is_resize_and_normalise():
    image = course_image()
    out = build_transforms(128, 64, train=False)(image)
    expected = (torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255 - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(build_transforms(128, 64, train=True, **NO_AUGMENT)(image), out)


def test_train_is_random_eval_is_not():
    image = course_image()
    torch.manual_seed(0)
    train = build_transforms(128, 64, train=True)
    assert not torch.equal(train(image), train(image))
    evaluate = build_transforms(128, 64, train=False)
    assert torch.equal(evaluate(image), evaluate(image))


def test_bad_options():
    with pytest.raises(ConfigError, match="erasing=1.5 is a probability"):
        build_transforms(128, 64, train=True, erasing=1.5)
    with pytest.raises(ConfigError, match="pad=-1"):
        build_transforms(128, 64, train=True, pad=-1)
    with pytest.raises(TypeError, match="colour_jitter"):
        build_transforms(128, 64, train=True, colour_jitter=0.2)


def test_batch_augment_shapes_and_determinism():
    images = torch.randint(0, 256, (6, 3, 128, 64), dtype=torch.uint8)
    out = batch_augment(images, generator=torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, 128, 64) and out.dtype == torch.float32
    again = batch_augment(images, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert batch_augment(images, size=(256, 128)).shape == (6, 3, 256, 128)
    torch.testing.assert_close(batch_augment(images, **NO_AUGMENT), normalize_batch(images), atol=1e-4, rtol=0)  # grid_sample rounding


def test_batch_flip_and_pad_crop_are_exact():
    """Flip and integer pad-and-crop shifts move pixels without interpolating them."""
    images = torch.randint(0, 256, (8, 3, 16, 8), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(1)
    out = batch_augment(images, **{**NO_AUGMENT, "flip": True}, generator=generator)
    plain, flipped = normalize_batch(images), normalize_batch(images.flip(-1))
    for i in range(8):
        assert torch.allclose(out[i], plain[i], atol=1e-5) or torch.allclose(out[i], flipped[i], atol=1e-5)
    shifted = batch_augment(images, **{**NO_AUGMENT, "pad": 2}, generator=generator)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))  # zero padding, then every 16x8 crop
    for i in range(8):
        crops = [normalize_batch(padded[i : i + 1, :, dy : dy + 16, dx : dx + 8])[0] for dy in range(5) for dx in range(5)]
        assert any(torch.allclose(shifted[i], crop, atol=1e-5) for crop in crops)


def test_batch_erasing_uses_the_mean():
    images = torch.full((4, 3, 32, 16), 255, dtype=torch.uint8)
    out = batch_augment(images, **{**NO_AUGMENT, "erasing": 1.0}, generator=torch.Generator().manual_seed(0))
    erased = (out == 0).all(dim=1)  # (B, H, W)
    assert all(0 < erased[i].sum() < 32 * 16 for i in range(4))


def test_batch_resize_matches_interpolate():
    images = torch.randint(0, 256, (3, 3, 32, 16), dtype=torch.uint8)
    x = images.float() / 255
    up = torch.nn.functional.interpolate(x, size=(64, 32), mode="bilinear", align_corners=False)
    down = torch.nn.functional.interpolate(x, size=(16, 8), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(batch_augment(images, size=(64, 32), **NO_AUGMENT), normalize_batch(up), atol=1e-4, rtol=0)
    torch.testing.assert_close(batch_augment(images, size=(16, 8), **NO_AUGMENT), normalize_batch(down), atol=1e-4, rtol=0)
