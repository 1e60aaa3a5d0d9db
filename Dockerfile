# Build: the service alone (not the tools of the workspace), as CI builds it; protoc comes from
# the build itself.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p totp-service

# Run: a small image with the one binary, as a non-root user.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data totp && mkdir /data && chown totp /data
COPY --from=build /src/target/release/totp-service /usr/local/bin/totp-service
USER totp
ENV TOTP_DATA_DIR=/data TOTP_LISTEN=0.0.0.0:8080
VOLUME /data
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s CMD ["totp-service", "healthcheck"]
ENTRYPOINT ["totp-service"]
CMD ["serve"]
