# One image with the four Trident binaries and the load generator (the
# sample traffic); docker-compose.yml picks the binary per service with
# `command:`.
FROM rust:1.89-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked \
    -p ingest-gateway -p downsampler -p alerter -p writer -p trident-loadgen

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 trident
COPY --from=build /src/target/release/trident-gateway \
                  /src/target/release/trident-downsampler \
                  /src/target/release/trident-alerter \
                  /src/target/release/trident-writer \
                  /src/target/release/trident-loadgen /usr/local/bin/
USER trident
