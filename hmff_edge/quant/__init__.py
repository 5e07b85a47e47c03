"""Quantization-aware training (QAT) for the model zoo, on Keras 3 (no tf_keras).

``quantize_model(model)`` rebuilds a trained float model as its QAT twin: every
convolution (plain, depthwise, grouped 1x1 with its folded interleave, padding-aware
depthwise) and the classifier become one layer with the following batch normalization
folded into the weights and the folded weights fake-quantized per output channel,
symmetric, as TFLite's int8 spec stores them; a fake quantizer with a learned (moving
average) range sits on every tensor the int8 graph requantizes (after each convolution or
activation, add, concat, pool), and the sigmoid of swish and the softmax are quantized at
LiteRT's fixed 1/256 output step. Traced and converted, the fake quantizers become the int8
file's quantization parameters, so the export runs what the QAT model trained with.

Submodules import TensorFlow; this package's ``__init__`` does not.
"""
