# Two images from one file:
#   docker build --target runtime -t hmff-edge:runtime .   # device side: LiteRT + onnxruntime, no TensorFlow
#   docker build --target full    -t hmff-edge:full .      # training and conversion
# Building `runtime` also builds `full` once, to export the small model that the runtime
# image benchmarks at build time (the same check as .ci/run's installed-wheel lane).
FROM python:3.11-slim AS base
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /opt/hmff-edge
COPY pyproject.toml README.md ./
COPY hmff_edge ./hmff_edge

FROM base AS full
RUN pip install '.[all]'
COPY models ./models
COPY convert ./convert
COPY bench ./bench
ENTRYPOINT ["hmff-edge"]
CMD ["--help"]

# A 32 px, 3-class HMFF-MobileNet exported by the package's own exporter.
FROM full AS smoke-model
RUN hmff-edge export hmff-mobilenet-16ch --img-size 32 --classes 3 --format tflite \
      --quantize none --no-verify --quiet --out /tmp/smoke-model

FROM base AS runtime
# Installed non-editable; device profiles ship inside the package, so nothing else is copied.
RUN pip install '.[runtime]' && python -c "import hmff_edge.runtime, sys; assert 'tensorflow' not in sys.modules"
COPY --from=smoke-model /tmp/smoke-model /tmp/smoke-model
RUN cd /tmp \
    && hmff-edge bench /tmp/smoke-model/tflite_fp32.tflite --device cpu --runs 5 --max-batch 2 --no-progress \
    && hmff-edge bench /tmp/smoke-model/tflite_fp32.tflite --device rpi --runs 5 --max-batch 2 --no-progress \
    && rm -rf /tmp/smoke-model
RUN useradd --create-home --uid 1000 hmff
USER hmff
EXPOSE 8080
ENTRYPOINT ["hmff-edge"]
# Mount exported models at /models; bind to all interfaces inside the container only.
CMD ["serve", "/models", "--host", "0.0.0.0", "--port", "8080"]
