"""A tiny Keras classifier for fast training tests (``--model tests.test_train_tinymodel:build``).

It has BatchNormalization (resume must restore its statistics) and trains in well under a
second per epoch on the tiny folders the tests make. No tests live here.
"""


def build(img_size: int, num_classes: int, dropout: float = 0.0):
    import keras

    inp = keras.Input((img_size, img_size, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    if dropout:
        x = keras.layers.Dropout(dropout)(x)
    out = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inp, out, name="tiny")


def build_flat(img_size: int, num_classes: int, dropout: float = 0.0):
    """No BatchNormalization: with a vanishing learning rate its predictions never change."""
    import keras

    inp = keras.Input((img_size, img_size, 3))
    x = keras.layers.GlobalAveragePooling2D()(inp)
    out = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inp, out, name="flat")
