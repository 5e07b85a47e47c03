"""Server settings: the flags of ``hmff-edge serve`` as one typed value."""

from __future__ import annotations

from dataclasses import dataclass, field

from hmff_edge.serve.repository import VersionPolicy


@dataclass
class ServeConfig:
    """Everything the server can be told. Times in seconds, sizes in MiB."""

    # 1 by default: on the CPUs measured (bench/results/serve_load*.md) LiteRT's cost per
    # image rises with the batch size, so coalescing lowers throughput. Raise it for engines
    # and devices whose per-image cost falls with batch size.
    max_batch: int = 1
    max_delay_ms: float = 2.0
    max_queue: int = 64
    # Samples one request may carry; a client cannot make one inference arbitrarily large.
    max_request_batch: int = 64
    max_body_mb: float = 16.0
    # Request bytes held at once over all connections: bodies as they arrive, decompressed
    # bodies, the estimated cost of decoding JSON, and decoded tensors waiting for the engine.
    max_buffered_mb: float = 64.0
    # A connection that has not sent a complete request head this long after its first
    # byte is closed (slowloris); an idle keep-alive connection is closed after idle_timeout.
    header_timeout_s: float = 10.0
    # A request body not received completely this long after its head arrived: 408, closed.
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 15.0
    api_key: str | None = None
    max_image_pixels: int = 16_000_000  # decompression-bomb bound for :classify uploads
    default_top_k: int = 5
    poll_s: float | None = None  # repository poll interval (None: load once)
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    threads: int | None = None  # engine threads per model version

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def max_buffered_bytes(self) -> int:
        # Never below one maximal body, or such a request could never be read.
        return max(int(self.max_buffered_mb * 1024 * 1024), self.max_body_bytes)
