# The bridge's runtime image, around the release binary built on the host:
#   cargo build --release && docker build -t referral-bridge .
# The image holds the binary and the two libraries it links against beyond glibc (libsqlite3,
# libpq: `ldd target/release/referral-bridge`), no build tools. TLS to the peers is rustls with
# its own roots, so no CA bundle is needed.
FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends libsqlite3-0 libpq5 \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin bridge \
    && mkdir -p /data \
    && chown bridge /data

COPY target/release/referral-bridge /usr/local/bin/referral-bridge

USER bridge
# The SQLite default (`referral-bridge.db`) lands in the volume.
WORKDIR /data
VOLUME /data
ENV BRIDGE_LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["referral-bridge", "healthcheck"]
ENTRYPOINT ["referral-bridge"]
CMD ["serve"]
