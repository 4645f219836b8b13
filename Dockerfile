# cloudir in a container: `cloudir triage` with the EventBridge event on stdin, for a task
# EventBridge starts (docs/triage.md, "Running it unattended").
#
# The image builds OFFLINE: nothing is fetched but the base image. Every dependency comes
# from wheels you put in dist/wheels/ beforehand; the builder stage builds cloudir's own
# wheel from this source tree against them, and the final stage installs only wheels
# (`pip install --no-index --find-links`). Build the wheels once, on a machine that reaches
# a package registry, in the same base image so they fit its Python and platform:
#
#   docker run --rm -v "$PWD":/src -w /src python:3.11-slim \
#       pip wheel -w dist/wheels . hatchling==1.33.0
#   docker build -t cloudir .
#
# (hatchling is cloudir's build backend, see pyproject.toml; the builder stage needs it
# as a wheel too.) Without Docker on that machine, `pip wheel -w dist/wheels .
# hatchling==1.33.0` under CPython 3.11 on Linux of the same architecture does the same.
# Copy dist/wheels/ to the build host with the source tree. BuildKit is needed (the
# default builder since Docker 23) for the RUN --mount lines.
#
# Run it (credentials come from the task role in ECS; locally, pass them in):
#   docker run --rm -i -e AWS_REGION=eu-west-1 cloudir < event.json
#   docker run --rm -i cloudir triage --case /case --upload s3://ir-cases/triage \
#       --notify sns:arn:aws:sns:eu-west-1:111122223333:ir-triage - < event.json
# The container's disk goes with the task: use --upload so the case folder survives.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY dist/wheels/ /wheels/
COPY pyproject.toml README.md ./
COPY cloudir/ ./cloudir/
# cloudir's wheel is built here from the source tree, never taken from dist/wheels/
RUN rm -f /wheels/cloudir-*.whl \
    && pip install --no-index --find-links /wheels hatchling \
    && pip wheel --no-index --find-links /wheels --no-build-isolation -w /wheels .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="cloudir" \
      org.opencontainers.image.description="cloudir triage: from a GuardDuty or Security Hub alert to a report" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels cloudir
RUN groupadd --system --gid 10001 cloudir \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/cloudir cloudir \
    && mkdir /case \
    && chown 10001:10001 /case
# a numeric user, so a platform that must refuse root (runAsNonRoot) can check it
USER 10001:10001
WORKDIR /home/cloudir
ENTRYPOINT ["cloudir"]
CMD ["triage", "--case", "/case", "-"]
