# promptgate as a container: Hugging Face Spaces (Docker SDK), `docker run`, any container host.
# Settings come from the environment at run time (docker run --env-file, Space secrets);
# no secret is ever copied into or set in the image. See the README's "Deploying" section.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PORT=7860

# Hugging Face Spaces run containers as uid 1000; the code stays owned by root, read-only to it.
RUN useradd --create-home --uid 1000 --user-group --shell /usr/sbin/nologin app

WORKDIR /app

# Dependencies in their own layer, rebuilt only when requirements.txt changes. uvloop gives
# uvicorn a C event loop (with httptools, from requirements.txt, its C parser): 15-30% more
# requests per second (bench/performance.md). Not in requirements.txt: Vercel's runtime
# brings its own server.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt uvloop==0.23.0

COPY api/ api/
COPY lib/ lib/

USER 1000:1000

EXPOSE 7860

# The slim image has no curl: the stdlib asks /api/health, which needs no key and calls nothing upstream.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '7860') + '/api/health', timeout=4)"]

# sh -c so that $PORT (set by the platform, default 7860) is expanded; exec so uvicorn gets the signals.
CMD ["sh", "-c", "exec uvicorn api.index:app --host 0.0.0.0 --port ${PORT} --no-access-log"]
