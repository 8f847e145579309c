"""The benchmark harness: sockact beside gunicorn, granian, uWSGI, uvicorn (ASGI) and nginx (`make bench`).

Run from the repository root with the peers' virtualenv: ``bench/.venv/bin/python -m bench``.
It writes docs/benchmarks.md and docs/benchmarks.png; see docs/benchmarks.md for the method.
"""
