# syntax=docker/dockerfile:1
#
# ndots container image: a fully static binary on an empty (scratch) base, non-root, no shell.
#
#   docker build -t ndots:0.1.0 .
#   docker run --rm -p 1053:53/udp -p 1053:53/tcp -p 9255:9255 ndots:0.1.0
#
# Entrypoint: /ndots, default command `proxy --config /etc/ndots/ndots.yaml` (configs/image.yaml:
# DNS on 0.0.0.0:53 UDP+TCP, upstream = the container's /etc/resolv.conf, admin HTTP on
# 0.0.0.0:9255 with /metrics, /healthz, /readyz, /report). Mount another file at
# /etc/ndots/ndots.yaml, or pass other arguments (`docker run ndots:0.1.0 simulate ...`).
# The static build is scripts/build-static.sh, the same script tests/image.rs runs to check the
# binary answers DNS from an empty root directory.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# The script prints the binary's path; the debug info it carries for benches is not shipped.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    bin="$(scripts/build-static.sh)" \
    && mkdir -p /out \
    && objcopy --strip-debug "$bin" /out/ndots

FROM scratch
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ndots" \
      org.opencontainers.image.description="Caching DNS forwarder that finds and removes the load of Kubernetes' ndots:5 search-path expansion" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/ndots /ndots
COPY configs/image.yaml /etc/ndots/ndots.yaml
# 65532: the conventional "nonroot" user of minimal images; no passwd file is needed.
USER 65532:65532
EXPOSE 53/udp 53/tcp 9255/tcp
ENTRYPOINT ["/ndots"]
CMD ["proxy", "--config", "/etc/ndots/ndots.yaml"]
