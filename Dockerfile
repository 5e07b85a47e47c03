# Two images from one file:
#   docker build --target runtime -t hmff-edge:runtime .   # device side: LiteRT + onnxruntime, no TensorFlow
#   docker build --target full    -t hmff-edge:full .      # training and conversion
FROM python:3.11-slim AS base
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /opt/hmff-edge
COPY pyproject.toml README.md ./
COPY hmff_edge ./hmff_edge

FROM base AS runtime
RUN pip install '.[runtime]' && python -c "import hmff_edge.runtime, sys; assert 'tensorflow' not in sys.modules"
COPY bench/profiles ./bench/profiles
RUN useradd --create-home --uid 1000 hmff
USER hmff
EXPOSE 8080
ENTRYPOINT ["hmff-edge"]
# Mount exported models at /models; bind to all interfaces inside the container only.
CMD ["serve", "/models", "--host", "0.0.0.0", "--port", "8080"]

FROM base AS full
RUN pip install '.[all]'
COPY models ./models
COPY convert ./convert
COPY bench ./bench
ENTRYPOINT ["hmff-edge"]
CMD ["--help"]
