"""The training loop's Adam: Keras' own optimizer whose per-variable update is TensorFlow's
fused ResourceApplyAdam kernel; same results, same saved form."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.tf


def _model(seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((6, 6, 3))
    # no bias before BN: its gradient is rounding noise, which Adam scales up to full steps,
    # so two equal updates in different float order would drift apart there
    x = keras.layers.Conv2D(4, 3, use_bias=False, name="c")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="d")(x))


def _train(optimizer, steps=4):
    m = _model()
    m.compile(optimizer, "sparse_categorical_crossentropy")
    rng = np.random.default_rng(1)
    for _ in range(steps):
        m.train_on_batch(rng.normal(size=(8, 6, 6, 3)).astype("float32"), rng.integers(0, 3, 8))
    return m


@pytest.mark.parametrize("amsgrad", [False, True])
def test_fused_adam_trains_like_keras_adam(amsgrad):
    import keras

    from hmff_edge.train.optim import fuse_adam

    plain = _train(keras.optimizers.Adam(1e-2, amsgrad=amsgrad))
    fused = _train(fuse_adam(keras.optimizers.Adam(1e-2, amsgrad=amsgrad)))
    for a, b in zip(plain.get_weights(), fused.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(plain.optimizer.variables, fused.optimizer.variables, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    assert int(fused.optimizer.iterations.numpy()) == 4
    # the weights moved: a no-op update would also "match" an untrained model
    assert not np.allclose(_model().get_weights()[0], fused.get_weights()[0])


def test_fused_adam_is_one_kernel_per_variable_and_saves_as_keras_adam(tmp_path):
    import keras
    import tensorflow as tf

    from hmff_edge.train.optim import fuse_adam

    m = _model()
    opt = fuse_adam(keras.optimizers.Adam(1e-3))
    opt.build(m.trainable_variables)

    @tf.function
    def step():
        opt.apply_gradients([(tf.ones_like(v), v) for v in m.trainable_variables])

    ops = [op.type for op in step.get_concrete_function().graph.get_operations()]
    assert ops.count("ResourceApplyAdam") == len(m.trainable_variables), ops
    m.compile(opt, "mse")
    m.save(tmp_path / "m.keras")
    back = keras.models.load_model(tmp_path / "m.keras")  # plain Keras, nothing registered
    assert type(back.optimizer) is keras.optimizers.Adam
    sgd = keras.optimizers.SGD()
    assert fuse_adam(sgd) is sgd and "update_step" not in vars(sgd)


def test_prepare_adam_builds_slots_once_and_fuses():
    import keras

    from hmff_edge.train.optim import prepare_adam

    m = _model()
    m.compile(keras.optimizers.Adam(1e-3), "mse")
    opt = prepare_adam(m)
    assert opt is m.optimizer and opt.built and "update_step" in vars(opt)
    slots = [id(v) for v in opt.variables]
    prepare_adam(m)  # a resumed model's optimizer is built already: nothing is rebuilt
    assert [id(v) for v in m.optimizer.variables] == slots
