"""The paper's optimizer (Adam) with each variable's update as one TensorFlow kernel.

Keras 3's Adam spells one variable's update as about 25 graph ops (casts, powers, two
moment updates, the step), traced in Python for each of the model's variables: for
HMFF-MobileNet-16Ch's 127 variables that was 5.3 of the 13.3 s its first ``fit`` call spent
tracing on this CPU, and each op is dispatched again at every step. ``ResourceApplyAdam``
is the same update (same bias correction, epsilon outside the square root) in one kernel.

The optimizer stays a plain ``keras.optimizers.Adam``: only that instance's
``update_step`` is replaced, so saved models name Keras' own Adam, load with plain Keras,
and carry the same slot variables. Anything the kernel does not cover (AMSGrad, sparse
gradients, non-float32 variables) goes to Keras' update; weight decay, clipping, EMA and
loss scaling stay in Keras' base class, which applies them around ``update_step``.
"""

from __future__ import annotations

import types


def _fused_update_step(self, gradient, variable, learning_rate):
    import tensorflow as tf

    if (self.amsgrad or isinstance(gradient, tf.IndexedSlices)
            or variable.dtype != tf.float32 or gradient.dtype != tf.float32):
        return type(self).update_step(self, gradient, variable, learning_rate)
    idx = self._get_variable_index(variable)
    m = self._momentums[idx].value
    v = self._velocities[idx].value
    step = tf.cast(self.iterations + 1, tf.float32)
    beta_1 = tf.constant(self.beta_1, tf.float32)
    beta_2 = tf.constant(self.beta_2, tf.float32)
    tf.raw_ops.ResourceApplyAdam(
        var=variable.handle, m=m.handle, v=v.handle,
        beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
        lr=tf.cast(learning_rate, tf.float32), beta1=beta_1, beta2=beta_2,
        epsilon=tf.constant(self.epsilon, tf.float32), grad=gradient)


def fuse_adam(optimizer):
    """Give a ``keras.optimizers.Adam`` instance the fused update (in place); any other
    optimizer is returned unchanged. Call it before the first training step is traced."""
    import keras

    if type(optimizer) is keras.optimizers.Adam:
        optimizer.update_step = types.MethodType(_fused_update_step, optimizer)
    return optimizer


def prepare_adam(model):
    """The optimizer set-up ``hmff-edge train`` uses, on a compiled model: build the slots
    now, eagerly, if they are not built yet (0.3 s; left to the first training step they are
    made inside its trace, 4.7 s for the 16Ch model's 254 slots here, and force a second
    trace), then :func:`fuse_adam`. Call it inside the distribution strategy's scope."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    return fuse_adam(model.optimizer)
