# cmbprep container (docs/installation.rst, docs/hpc.rst):
#   docker run --rm --read-only --tmpfs /tmp --network none -u "$(id -u):$(id -g)" \
#       -v BIDS:/data:ro -v OUT:/out -v WORK:/work cmbprep /data /out participant -w /work
FROM debian:bookworm-slim

# Optional CA bundle for pip behind an intercepting proxy (empty by default).
ARG PIP_CERT=""
# Recorded in the outputs' dataset_description.json (GeneratedBy.Container.Tag):
# docker build --build-arg CMBPREP_TAG=cmbprep:<version> -t cmbprep:<version> .
ARG CMBPREP_TAG=cmbprep:0.1.0

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates graphviz \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first (a cached layer): install a stub of the package, which pulls them in,
# every version pinned by the lock file (requirements/constraints.txt, `make lock`).
COPY pyproject.toml README.md /src/
COPY requirements/constraints.txt /src/constraints.txt
RUN python3 -m venv /opt/cmbprep \
    && if [ -n "$PIP_CERT" ]; then export PIP_CERT; else unset PIP_CERT; fi \
    && mkdir -p /src/cmbprep \
    && printf '__version__ = "0.0.0"\n' > /src/cmbprep/__init__.py \
    && /opt/cmbprep/bin/pip install --no-cache-dir -c /src/constraints.txt /src \
    && /opt/cmbprep/bin/pip uninstall -y cmbprep \
    && rm -rf /src/build /src/cmbprep /src/*.egg-info /root/.cache
COPY cmbprep /src/cmbprep
# The region atlas is built into the image from the CAT12 atlases of deepmriprep (academic,
# non-commercial terms: README.md) and the shipped template-to-template transform.
RUN if [ -n "$PIP_CERT" ]; then export PIP_CERT; else unset PIP_CERT; fi \
    && /opt/cmbprep/bin/pip install --no-cache-dir --no-deps -c /src/constraints.txt \
        /src deepmriprep==0.3.0 \
    && /opt/cmbprep/bin/python -m cmbprep.algorithms.lobes \
    && rm -rf /src /root/.cache

RUN useradd --create-home --uid 1000 cmbprep
ENV PATH=/opt/cmbprep/bin:$PATH \
    HOME=/home/cmbprep \
    MPLCONFIGDIR=/tmp/matplotlib \
    CMBPREP_CONTAINER_TAG=${CMBPREP_TAG} \
    ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 \
    PYTHONDONTWRITEBYTECODE=1
USER cmbprep
WORKDIR /tmp
ENTRYPOINT ["cmbprep"]
