# One image for every mimoq role: worker (default), simulator, producer CLI.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY mimoq ./mimoq
COPY producer ./producer
COPY worker ./worker
RUN pip install --no-cache-dir ".[otel]" && mkdir -p /data && chown nobody /data
USER nobody
ENV MIMOQ_DATA_DIR=/data
CMD ["mimoq", "worker"]
