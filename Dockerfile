# syntax=docker/dockerfile:1
# egress-xds images, multi-stage:
#   docker build --target runtime -t egress-xds:dev .          the control plane (default target)
#   docker build --target capture -t egress-xds-capture:dev .  the sidecar's iptables init container
#
# The runtime image runs as uid 10001, writes nothing at run time (bytecode is compiled at
# build time; logs go to stderr) and so works with readOnlyRootFilesystem: true.
# ENTRYPOINT is `egress-xds`, CMD `serve --kubernetes`: a pod's `args` replace only the CMD,
# and the same image renders sidecar bootstraps (`egress-xds bootstrap ...`).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: the project's wheel and the wheels of every dependency ------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY egress_xds ./egress_xds
COPY envoy/bootstrap.yaml envoy/capture.sh ./envoy/
# `kubernetes` is named here too, so the image has it whatever extras pyproject declares.
RUN pip wheel --wheel-dir /wheels . "kubernetes>=37"

# ---- capture: envoy/capture.sh with iptables, run once per pod as an init container ---------
FROM debian:bookworm-slim AS capture
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
COPY envoy/capture.sh /usr/local/bin/capture.sh
RUN chmod 0755 /usr/local/bin/capture.sh
ENTRYPOINT ["/usr/local/bin/capture.sh"]
CMD ["status"]

# ---- runtime: a slim Python with the wheels installed into a venv, non-root -----------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/egress-xds/bin:${PATH}
RUN python -m venv /opt/egress-xds
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    /opt/egress-xds/bin/pip install --no-cache-dir --no-index --find-links /wheels egress-xds kubernetes
# The wheel carries envoy/bootstrap.yaml (share/egress-xds/): `egress-xds bootstrap` must
# render from it here, as pods run it.
RUN /opt/egress-xds/bin/python -m compileall -q /opt/egress-xds \
 && egress-xds --help >/dev/null \
 && egress-xds bootstrap --namespace image-check >/dev/null
USER 10001:10001
EXPOSE 18000 19000
ENTRYPOINT ["egress-xds"]
CMD ["serve", "--kubernetes"]
