# CityGrid API image. The database is the official postgis/postgis image (docker-compose.yml).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md alembic.ini ./
COPY api ./api
COPY geo ./geo
COPY grids ./grids
COPY cases ./cases
COPY migrations ./migrations
RUN pip install . && useradd --system --uid 10001 citygrid && mkdir -p /data/photos && chown citygrid /data/photos

USER citygrid
ENV CITYGRID_PHOTO_DIR=/data/photos CITYGRID_HOST=0.0.0.0 CITYGRID_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
# Migrate on start, then serve.
CMD ["sh", "-c", "citygrid migrate && exec uvicorn api.main:app --host 0.0.0.0 --port 8000 --proxy-headers"]
