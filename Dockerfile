# mpp-proxy as a container: the wheel is built in a throw-away stage and installed into a
# virtualenv on Debian's own Python; the runtime stage copies only that virtualenv.
#
#   docker run -v ./proxy.toml:/config/proxy.toml -e MPP_SECRET_KEY=... -p 4402:4402 \
#       mpp-proxy --config /config/proxy.toml
#
# Built here with `make image` (buildah); `docker build .` works the same. A build host that
# needs its own package index or CA bundle passes them as build secrets `pip.conf` and
# `pip-ca.crt`: they are read by pip in the builder and never written to a layer.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS builder
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv binutils \
 && rm -rf /var/lib/apt/lists/*
# The pinned dependencies first, from pyproject.toml alone: a code change reuses this layer.
# With the redis extra: several replicas share their state through Redis.
COPY pyproject.toml /src/
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-ca.crt,target=/etc/ssl/pip-ca.crt \
    python3 -m venv /opt/mpp-proxy \
 && python3 -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; print(*p['dependencies'], *p['optional-dependencies']['redis'], sep='\n')" >/src/requirements.txt \
 && /opt/mpp-proxy/bin/pip install --requirement /src/requirements.txt
COPY README.md /src/
COPY mpp_proxy /src/mpp_proxy
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-ca.crt,target=/etc/ssl/pip-ca.crt \
    /opt/mpp-proxy/bin/pip wheel --no-deps --wheel-dir /wheels /src \
 && /opt/mpp-proxy/bin/pip install --no-deps /wheels/mpp_proxy-*.whl \
 && /opt/mpp-proxy/bin/pip check \
 && /opt/mpp-proxy/bin/pip uninstall --yes pip setuptools \
 && /opt/mpp-proxy/bin/mpp-proxy --version
# Debug symbols and build-time sources are ~35 MB of the ~150 MB of dependencies.
RUN cd /opt/mpp-proxy/lib/python3*/site-packages \
 && find . -name '*.so' -exec strip --strip-unneeded {} + \
 && find . \( -name '*.c' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.pyi' \) -delete \
 && rm -rf ./*/tests

FROM ${BASE}
ARG VERSION=0.0.0
ARG REVISION=""
ARG SOURCE=""
LABEL org.opencontainers.image.title="mpp-proxy" \
      org.opencontainers.image.description="A payment gateway for any HTTP API: callers pay per call over HTTP 402 (Machine Payments Protocol)." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/mpp-proxy --no-create-home \
        --shell /usr/sbin/nologin mpp-proxy \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/mpp-proxy \
 && install -d -m 0755 /config
COPY --from=builder /opt/mpp-proxy /opt/mpp-proxy
# serve reads these when --config, --host and --port are not given: the image's contract is
# /config/proxy.toml and 0.0.0.0:4402, whatever the file says about host and port. The default
# SQLite file (sqlite:///mpp-proxy-state.db, relative) lands in the working directory, the volume.
ENV PATH=/opt/mpp-proxy/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPP_PROXY_CONFIG=/config/proxy.toml \
    MPP_PROXY_HOST=0.0.0.0 \
    MPP_PROXY_PORT=4402
USER 10001:10001
WORKDIR /var/lib/mpp-proxy
VOLUME ["/var/lib/mpp-proxy"]
EXPOSE 4402
# SIGTERM drains: /readyz turns 503 at once, the listener serves for --drain-seconds, then
# in-flight requests get --graceful-timeout to finish.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MPP_PROXY_PORT', '4402'), timeout=2)"]
ENTRYPOINT ["mpp-proxy"]
CMD ["serve"]
