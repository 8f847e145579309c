"""A Django project in one module, with one async view, served through Django's ASGI handler."""

from __future__ import annotations

import asyncio

import django
from django.conf import settings
from django.http import JsonResponse
from django.urls import path

settings.configure(DEBUG=False, SECRET_KEY="tests-only", ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], MIDDLEWARE=[])
django.setup()


async def hello(request):
    await asyncio.sleep(0)  # an async view: Django runs it on the worker's event loop
    return JsonResponse({"framework": "django", "method": request.method, "path": request.path,
                         "query": request.GET.get("q")})


urlpatterns = [path("hello/", hello)]

from django.core.asgi import get_asgi_application  # noqa: E402 - after settings, as Django requires

application = get_asgi_application()
