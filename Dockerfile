# The service's image. Two ways to fill it, one runtime stage:
#   docker build -t totp-service .                    # compiles the service in a Rust image
#   podman build --build-arg BINARY_FROM=prebuilt -f Dockerfile -t totp-service CONTEXT
#                                                     # takes CONTEXT/totp-service, built on the host
# (the second is how the tests build it: this machine kind cannot fetch the rust image).
ARG BINARY_FROM=build

# Build: the service alone (not the tools of the workspace), as CI builds it; protoc comes from
# the build itself.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p totp-service && cp target/release/totp-service /totp-service

# Or a binary built elsewhere for the same Debian release (glibc), from the build context.
FROM scratch AS prebuilt
COPY totp-service /totp-service

FROM ${BINARY_FROM} AS binary

# Run: Debian's slim base with the one binary, as a non-root user. The health check runs the
# binary itself (no shell, no curl).
FROM debian:bookworm-slim
RUN useradd --uid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin totp \
    && mkdir /data && chown totp /data
COPY --from=binary /totp-service /usr/local/bin/totp-service
USER totp
ENV TOTP_DATA_DIR=/data TOTP_LISTEN=0.0.0.0:8080
VOLUME /data
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s CMD ["totp-service", "healthcheck"]
ENTRYPOINT ["totp-service"]
CMD ["serve"]
