# The jobstream app: one image for every process; the command picks the role
# (docker-compose.yml runs `jobstream api`, `gateway`, `worker`, `topics`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# README* rather than README.md: pyproject names it, and a glob does not fail the build if absent.
COPY pyproject.toml README* ./
COPY schemas ./schemas
COPY producer ./producer
COPY deadletters ./deadletters
COPY scheduler ./scheduler
COPY consumer ./consumer
COPY gateway ./gateway
COPY jobstream ./jobstream
RUN pip install . && rm -rf /app/build

# Never run as root: a handler bug should not own the container.
RUN useradd --create-home --uid 10001 jobstream
USER jobstream

# Listen on every interface inside the container (the default 127.0.0.1 is unreachable).
ENV JOBSTREAM_HOST=0.0.0.0
EXPOSE 8000 8001
CMD ["jobstream", "api", "--host", "0.0.0.0"]
