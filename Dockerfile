# syntax=docker/dockerfile:1
# The tether image: one binary for `tether run` (embedded) and every cluster role
# (`tether edge|auth|thing|command|gateway --config FILE`); charts/tether runs it.
#   docker build -t registry.example.com/iot/tether:0.1.0 .

FROM rust:1.95-trixie AS build
WORKDIR /src
# The toolchain of rust-toolchain.toml without its extra components (rustfmt, clippy); the image's
# own target directory rather than .cargo/config.toml's shared one.
ENV RUSTUP_TOOLCHAIN=1.95.0 \
    CARGO_TARGET_DIR=/src/target \
    CARGO_TERM_COLOR=never
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tether \
    && install -D -m 0755 target/release/tether /out/tether

FROM debian:trixie-slim
# ca-certificates: NATS over tls:// checks the server against the system roots.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 tether \
    && useradd --system --uid 10001 --gid tether --home-dir /var/lib/tether --create-home --shell /usr/sbin/nologin tether
COPY --from=build /out/tether /usr/local/bin/tether
# An edge holds one file descriptor per device: raise the soft RLIMIT_NOFILE to the hard limit the
# container runtime allows (some start containers with a soft limit of 1024), then become tether.
COPY --chmod=0755 <<'SH' /usr/local/bin/tether-entrypoint
#!/bin/sh
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=$(cat /proc/sys/fs/nr_open 2>/dev/null || echo 1048576)
ulimit -Sn "$hard" 2>/dev/null || echo "tether-entrypoint: cannot raise the open-files limit to $hard" >&2
exec /usr/local/bin/tether "$@"
SH
USER 10001:10001
WORKDIR /var/lib/tether
# MQTT, REST API, health and metrics; gRPC of auth, thing, command.
EXPOSE 1883 8080 9090 50051 50052 50053
ENTRYPOINT ["/usr/local/bin/tether-entrypoint"]
# Without arguments: the whole platform in one process, data in /var/lib/tether (mount a volume).
CMD ["run", "--data-dir", "/var/lib/tether/data"]
