# The operator image: `docker build -t aftershock:dev .` (hack/kind/image.sh does this and
# loads it into kind). Runs as uid 65532 on a read-only root filesystem: writable are only
# /tmp (HOME) and the ledger volume at /var/lib/aftershock.
#
# Build arguments:
#   PYTHON_IMAGE         the base: any Debian-like image with python3 and venv (default
#                        python:3.11-slim; the local test bed uses a debootstrap'd bookworm)
#   PIP_INSTALL_OPTIONS  extra pip options, e.g. an offline build from wheels put in the
#                        context's wheels/ folder: "--no-index --find-links /src"
#                        (hack/testbed/images.sh builds the image this way, --network none)
# No "# syntax=" line: it would make BuildKit fetch a frontend image; the legacy builder and
# BuildKit both take this file as it is.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG PIP_INSTALL_OPTIONS=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# README.md* : pyproject.toml names it as the readme; the glob keeps the build working without it.
# wheels* : an optional folder of wheels for offline builds (see PIP_INSTALL_OPTIONS); its
# files land in /src itself (a glob that matches nothing must share a COPY with a file that exists).
COPY pyproject.toml README.md* wheels* ./
COPY operator/ operator/
# Byte-compiled here, because at run time the filesystem is read-only.
RUN pip install ${PIP_INSTALL_OPTIONS} . && python -m compileall -q /opt/venv/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="aftershock" \
      org.opencontainers.image.description="Kubernetes-native chaos evaluation operator" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    AFTERSHOCK_DB=/var/lib/aftershock/ledger.db
COPY --from=build /opt/venv /opt/venv
# A name for uid 65532: kopf asks getpass.getuser() for its identity, which raises KeyError for
# a uid without a passwd entry (python:3.11-slim has none either; found running this image).
RUN echo 'aftershock:x:65532:65532:aftershock operator:/tmp:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'aftershock:x:65532:' >> /etc/group \
    && mkdir -p /var/lib/aftershock && chown 65532:65532 /var/lib/aftershock
USER 65532:65532
WORKDIR /tmp
# 8080: liveness (/healthz); 9090: Prometheus metrics.
EXPOSE 8080 9090
ENTRYPOINT ["aftershock"]
CMD ["run", "--all-namespaces"]
