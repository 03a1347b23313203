import numpy as np

from train.augment import AugmentConfig, augment, build_augmentation


def _image():
    rng = np.random.default_rng(3)
    return rng.random((96, 96)).astype(np.float32)


def test_same_seed_same_augmentation_and_range():
    first = augment(build_augmentation(AugmentConfig(), seed=7), _image())
    second = augment(build_augmentation(AugmentConfig(), seed=7), _image())
    assert first.shape == (96, 96) and first.dtype == np.float32
    assert 0.0 <= first.min() and first.max() <= 1.0
    assert np.array_equal(first, second)


def test_different_seeds_differ_and_augmentation_changes_pixels():
    image = _image()
    outputs = [augment(build_augmentation(AugmentConfig(), seed=s), image) for s in range(4)]
    assert not all(np.array_equal(outputs[0], o) for o in outputs[1:])
    assert any(np.abs(o - image).mean() > 0.01 for o in outputs)


def test_evaluation_does_not_augment():
    image = _image()
    pipeline = build_augmentation(AugmentConfig(), seed=0, training=False)
    assert pipeline is None
    assert augment(pipeline, image) is image


def test_global_numpy_state_is_untouched():
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    augment(build_augmentation(AugmentConfig(), seed=1), _image())
    assert np.random.random() == expected
