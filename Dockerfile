# The mailroom controller image, for users with a container engine.
# CI on machines without one assembles an equivalent image with
# hack/build-image.sh (same binary, same non-root user, no shell).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin mailroom

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/mailroom /usr/local/bin/mailroom
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/mailroom"]
CMD ["run"]
