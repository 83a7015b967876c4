# The strata binary in a small image. Used by docker-compose.yml.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin strata

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/strata /usr/local/bin/strata
COPY strata.example.toml /etc/strata/strata.toml
ENV STRATA_CONFIG=/etc/strata/strata.toml
EXPOSE 9464
ENTRYPOINT ["strata"]
CMD ["run"]
