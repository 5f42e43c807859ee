# One Dockerfile, two ways to get the binary:
#
#   docker build -t kademlia:latest .
#       (with internet) compiles in the `builder` stage and ships the `runtime` stage.
#   scripts/build-image.sh
#       (offline) builds a static binary on the host, then `docker build --target prebuilt`.
#
# `base` and `prebuilt` come first on purpose: the classic builder runs every stage up to the
# target, so the offline target must not sit behind a stage that needs to pull an image.
# Both images are FROM scratch: one static binary, no shell, no libc on disk, non-root.

FROM scratch AS base
# The data dir's mount point, owned by the node's user so that a volume mounted there (a
# Compose volume, a PersistentVolumeClaim) starts writable. Unused unless KADEMLIA_DATA_DIR
# is set (docker-compose.yml and deploy/ set it to /data).
COPY --chown=65532:65532 .docker/data/ /data/
# Where Compose mounts the cluster CA's volume (a new volume takes this directory's owner).
COPY --chown=65532:65532 .docker/ca/ /ca/
USER 65532:65532
EXPOSE 50051 50052 9464
ENV KADEMLIA_HOST=0.0.0.0 KADEMLIA_PORT=50051
# The binary checks its own health (grpc.health.v1 on KADEMLIA_PORT): no shell or tool needed.
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 CMD ["/kademlia", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/kademlia"]
CMD ["node"]

FROM base AS prebuilt
COPY target/x86_64-unknown-linux-gnu/release/kademlia /kademlia

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
RUN RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --locked --target x86_64-unknown-linux-gnu

FROM base AS runtime
COPY --from=builder /src/target/x86_64-unknown-linux-gnu/release/kademlia /kademlia
