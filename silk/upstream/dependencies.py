"""What silk.upstream.transport takes from urllib3, httptools and requests beyond their public
API, checked once at start-up.

The transport subclasses urllib3's connection and drives its pool by hand, so an upgrade that
renames or reshapes one of these would otherwise fail at the first upstream call, under load.
SUPPORTED holds the versions the test suite runs against; pyproject.toml pins the same ranges
(tests/upstream/test_dependencies.py keeps the two equal).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from collections.abc import Callable, Mapping
from types import ModuleType

SUPPORTED = {"urllib3": ">=2.2,<2.9", "httptools": ">=0.6,<0.10", "requests": ">=2.32.5,<3"}


class UnsupportedDependency(RuntimeError):
    """An installed package lacks something the transport relies on; the message is one line
    naming the package, its version and the supported range."""


def _get(module: object, dotted: str) -> object:
    """`module.a.b.c`, or None where any step is missing."""
    value = module
    for name in dotted.split("."):
        value = getattr(value, name, None)
        if value is None:
            return None
    return value


def _reads(module: object, dotted: str, *names: str) -> bool:
    """Whether the function at `dotted` exists and its code uses every one of `names`."""
    code = getattr(_get(module, dotted), "__code__", None)
    return code is not None and set(names) <= set(code.co_names)


def _takes(module: object, dotted: str, *params: str) -> bool:
    """Whether the callable at `dotted` exists and accepts every one of `params` by name."""
    target = _get(module, dotted)
    if not callable(target):
        return False
    try:
        accepted = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return set(params) <= set(accepted)


def _is_property(module: object, dotted: str) -> bool:
    owner, _, name = dotted.rpartition(".")
    cls = _get(module, owner)
    return isinstance(cls, type) and isinstance(inspect.getattr_static(cls, name, None),
                                                property)


def _has(module: object, dotted: str, *members: str) -> bool:
    target = _get(module, dotted)
    return target is not None and all(hasattr(target, member) for member in members)


def _pool_keeps_bundle_path(requests: object) -> bool:
    """Whether requests, verifying with its default bundle, leaves the bundle's path on the
    pool for the transport to load once (2.32.0 to 2.32.4 hand it a context of their own)."""
    adapter = _get(requests, "adapters.HTTPAdapter")()
    url = "https://upstream.invalid/"
    probe = _get(requests, "Request")("POST", url).prepare()
    pool = adapter.get_connection_with_tls_context(probe, verify=True)
    adapter.cert_verify(pool, url, True, None)
    return bool(pool.ca_certs or pool.ca_cert_dir)


Check = Callable[[object], bool]

# (what the transport relies on, how to see that the module still has it), per package
NEEDS: dict[str, tuple[tuple[str, Check], ...]] = {
    "urllib3": (
        ("HTTPConnection.connect() opening the socket through self._new_conn()",
         lambda m: _reads(m, "connection.HTTPConnection.connect", "_new_conn")),
        ("HTTPConnection._new_conn() connecting to (_dns_host, port) with timeout, "
         "source_address and socket_options",
         lambda m: _reads(m, "connection.HTTPConnection._new_conn", "_dns_host", "port",
                          "timeout", "source_address", "socket_options")),
        ("the property HTTPConnection.is_connected, asked by the pool before reusing a "
         "connection",
         lambda m: _is_property(m, "connection.HTTPConnection.is_connected")
         and _reads(m, "util.connection.is_connection_dropped", "is_connected")
         and _reads(m, "connectionpool.HTTPConnectionPool._get_conn",
                    "is_connection_dropped")),
        ("HTTPConnectionPool._get_conn(timeout) and _put_conn(conn)",
         lambda m: _takes(m, "connectionpool.HTTPConnectionPool._get_conn", "timeout")
         and _takes(m, "connectionpool.HTTPConnectionPool._put_conn", "conn")),
        ("HTTPConnectionPool._new_conn() making ConnectionCls(**conn_kw)",
         lambda m: _reads(m, "connectionpool.HTTPConnectionPool._new_conn", "ConnectionCls",
                          "conn_kw")),
        ("HTTPSConnectionPool._new_conn() passing ca_certs and ca_cert_dir",
         lambda m: _reads(m, "connectionpool.HTTPSConnectionPool._new_conn", "ca_certs",
                          "ca_cert_dir")),
        ("HTTPSConnection(ssl_context=...)",
         lambda m: _takes(m, "connection.HTTPSConnection.__init__", "ssl_context")),
        ("util.ssl_.create_urllib3_context(cert_reqs=...)",
         lambda m: _takes(m, "util.ssl_.create_urllib3_context", "cert_reqs")),
        ("NameResolutionError(host, conn, reason) and NewConnectionError(conn, message)",
         lambda m: _takes(m, "exceptions.NameResolutionError", "host", "conn", "reason")
         and _takes(m, "exceptions.NewConnectionError", "conn", "message")),
    ),
    "httptools": (
        ("HttpResponseParser with feed_data, get_status_code and should_keep_alive",
         lambda m: _has(m, "HttpResponseParser", "feed_data", "get_status_code",
                        "should_keep_alive")),
        ("HttpParserError",
         lambda m: isinstance(_get(m, "HttpParserError"), type)),
    ),
    "requests": (
        ("HTTPAdapter.get_connection_with_tls_context(request, verify)",
         lambda m: _takes(m, "adapters.HTTPAdapter.get_connection_with_tls_context",
                          "request", "verify")),
        ("HTTPAdapter.cert_verify(conn, url, verify, cert) and request_url(request, proxies)",
         lambda m: _takes(m, "adapters.HTTPAdapter.cert_verify", "conn", "url", "verify",
                          "cert")
         and _takes(m, "adapters.HTTPAdapter.request_url", "request", "proxies")),
        ("HTTPAdapter leaving the certificate bundle's path on the pool it makes for "
         "verify=True", _pool_keeps_bundle_path),
    ),
}


def _version(name: str, module: object) -> str:
    version = getattr(module, "__version__", None)
    if version:
        return str(version)
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "(unknown version)"


def lacking(name: str, module: object) -> list[str]:
    """What of NEEDS[name] `module` lacks (an empty list when it has everything)."""
    missing = []
    for what, present in NEEDS[name]:
        try:
            ok = present(module)
        except Exception:  # noqa: BLE001 - a check that cannot run means the shape changed
            ok = False
        if not ok:
            missing.append(what)
    return missing


def check(modules: Mapping[str, ModuleType | object] | None = None) -> None:
    """Raise UnsupportedDependency unless every package has what the transport uses.

    `modules` maps a package name to the module to check (the installed ones by default).
    """
    for name in NEEDS:
        module = modules[name] if modules is not None else importlib.import_module(name)
        missing = lacking(name, module)
        if missing:
            raise UnsupportedDependency(
                f"{name} {_version(name, module)} is installed, but the upstream transport "
                f"needs {'; '.join(missing)}, which it lacks. SilkGateway supports "
                f"{name}{SUPPORTED[name]}: install a version in that range.")
