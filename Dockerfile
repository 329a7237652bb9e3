# lienthong node image.
#   docker build -t lienthong .
#   docker run --rm -v lienthong-data:/var/lib/lienthong lienthong init --mode district --id 86-28894 --parent province.example:7443 ...
#   docker run -d -v lienthong-data:/var/lib/lienthong -p 7443:7443 lienthong
# The node is PID 1: `docker stop` sends SIGTERM, which the node handles gracefully.

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/lienthong
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY node ./node
COPY sync ./sync
COPY adapters ./adapters
COPY config ./config
RUN /opt/lienthong/bin/pip install --no-compile . \
    && /opt/lienthong/bin/python -m compileall -q /opt/lienthong/lib

FROM python:3.11-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 lienthong \
    && useradd --system --uid 10001 --gid lienthong --home-dir /var/lib/lienthong --no-create-home --shell /usr/sbin/nologin lienthong \
    && mkdir -p /var/lib/lienthong \
    && chown lienthong:lienthong /var/lib/lienthong \
    && chmod 0700 /var/lib/lienthong
COPY --from=build /opt/lienthong /opt/lienthong
ENV PATH=/opt/lienthong/bin:$PATH \
    LIENTHONG_DIR=/var/lib/lienthong \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/lienthong
VOLUME ["/var/lib/lienthong"]
EXPOSE 7443
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 CMD ["lienthong", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["lienthong"]
CMD ["run"]
