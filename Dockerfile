# mailguard's container image: `make image` (docker build -t mailguard:<Cargo version> .).
# Two stages: a Rust toolchain with the C/C++ build dependencies of librdkafka (OpenSSL, zlib,
# zstd) and RocksDB (clang/libclang for bindgen), then a slim Debian runtime holding only the
# binary and the shared libraries it links, running as an unprivileged user.
# The chart (helm/mailguard) runs it with a read-only root filesystem: state goes to the volume at
# /var/lib/mailguard, temporary files to /tmp.

ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
# Package versions follow the Debian release of the pinned base image; pinning each one again
# would only break the build at every Debian point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        clang libclang-dev g++ make perl pkg-config \
        libssl-dev zlib1g-dev libzstd-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The dependency and target caches survive between builds (BuildKit); the binary is copied out
# of the cache mount so the next stage can take it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin mailguard \
    && install -D -m 0755 target/release/mailguard /out/mailguard

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g libzstd1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 mailguard \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/mailguard --no-create-home \
        --shell /usr/sbin/nologin mailguard \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/mailguard
COPY --from=build /out/mailguard /usr/local/bin/mailguard
USER 10001:10001
WORKDIR /var/lib/mailguard
# No configuration is baked in: the chart mounts mailguard.toml (state.dir under
# /var/lib/mailguard, http.listen 0.0.0.0:8080); with plain `docker run`, pass
# -e MAILGUARD_HTTP__LISTEN=0.0.0.0:8080 -e MAILGUARD_STATE__DIR=/var/lib/mailguard/state.
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/mailguard"]
CMD ["run"]
