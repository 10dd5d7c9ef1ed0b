"""Endpoint URLs: the base and query of a URL as a user pastes it, the form that may be recorded (no secret), Azure's
URLs, and the proxy the environment names for a URL."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from urllib.request import getproxies, proxy_bypass

AZURE_HOSTS = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")


def split_endpoint(url: str) -> tuple[str, dict[str, str]]:
    """(base URL, query parameters) of an endpoint as a user may paste it: a trailing ``/chat/completions`` (Azure's
    "target URI") is dropped, and the query (``?api-version=...``) is kept apart to go on every request."""
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    if path.endswith("/chat/completions"):
        path = path[: -len("/chat/completions")]
    return urlunsplit((parts.scheme, parts.netloc, path, "", "")), dict(parse_qsl(parts.query))


def public_url(url: str) -> str:
    """An endpoint as it may be recorded: no user:password, and of the query only ``api-version`` (a gateway may
    take its key as a query parameter)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k == "api-version"])
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), query, ""))


def is_azure(url: str) -> bool:
    parts = urlsplit(url)
    return (parts.hostname or "").endswith(AZURE_HOSTS) or "/openai/deployments/" in parts.path + "/"


def azure_deployment(url: str) -> str | None:
    path = urlsplit(url).path.rstrip("/").split("/")
    if "deployments" in path and path.index("deployments") + 1 < len(path):
        return path[path.index("deployments") + 1]
    return None


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``, unless ``NO_PROXY``
    lists its host), or None: what aiohttp's ``trust_env`` would find, found once."""
    parts = urlsplit(url)
    if proxy_bypass(parts.hostname or ""):
        return None
    proxies = getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")
