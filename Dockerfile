# syntax=docker/dockerfile:1
#
# The strait binary in a small runtime image: build with the Rust toolchain,
# run on distroless (glibc, CA certificates, no shell) as a non-root user.
#
#   docker build -t strait:0.1.0 .
#   docker run --rm strait:0.1.0 --help

FROM rust:1.88-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p strait \
    && install -D -m 0755 target/release/strait /out/strait \
    && strip /out/strait

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/strait /usr/local/bin/strait
# distroless' nonroot user: uid/gid 65532.
USER 65532:65532
# QUIC tunnels, and the admin endpoint (/healthz, /readyz, /status, /metrics).
EXPOSE 15443/udp 15000/tcp
ENTRYPOINT ["/usr/local/bin/strait", "gateway", "run"]
CMD ["--config", "/etc/strait/config/gateway.toml"]
