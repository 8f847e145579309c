"""A WSGI app that answers with how often its worker found made, when it asked, what the supervisor
makes before it forks (sockact.worker.shell.prepare): its listeners' Trust and its access log's line
builder. Each line: hits, then misses, of the kept function in this worker."""

from sockact.http.forwarded import Trust
from sockact.logs import access


def app(environ, start_response):
    kept = (Trust.kept.cache_info(), access._kept_builder.cache_info())
    body = "\n".join(f"{info.hits} {info.misses}" for info in kept).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
