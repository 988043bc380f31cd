"""The start-up check of what the upstream transport takes from urllib3, httptools and
requests, and the pins in pyproject.toml that keep an upgrade inside the tested range."""

from __future__ import annotations

import importlib.metadata
import sys
import tomllib
from types import SimpleNamespace

import httptools
import pytest
import requests
import urllib3
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from silk.upstream import dependencies
from silk.upstream.dependencies import SUPPORTED, UnsupportedDependency, check
from tests.support.gateway import ROOT

INSTALLED = {"urllib3": urllib3, "httptools": httptools, "requests": requests}


def _urllib3_with(**parts) -> SimpleNamespace:
    """urllib3 as an upgrade might ship it: its real parts, some replaced."""
    fake = SimpleNamespace(__version__="2.99.0", connection=urllib3.connection,
                           connectionpool=urllib3.connectionpool, util=urllib3.util,
                           exceptions=urllib3.exceptions)
    for name, value in parts.items():
        setattr(fake, name, value)
    return fake


class _PoolWithoutGetConn:
    """A connection pool whose `_get_conn` was renamed."""

    _put_conn = urllib3.HTTPConnectionPool._put_conn
    _new_conn = urllib3.HTTPConnectionPool._new_conn
    _take_conn = urllib3.HTTPConnectionPool._get_conn


class _ConnectionThatConnectsItself(urllib3.connection.HTTPConnection):
    """A connection whose connect() no longer goes through `_new_conn`."""

    def connect(self):
        self.sock = None


def test_the_installed_packages_have_what_the_transport_uses():
    check()
    for name, module in INSTALLED.items():
        assert dependencies.lacking(name, module) == []


@pytest.mark.parametrize(("name", "module", "lacks"), [
    ("urllib3", _urllib3_with(connectionpool=SimpleNamespace(
        HTTPConnectionPool=_PoolWithoutGetConn,
        HTTPSConnectionPool=urllib3.connectionpool.HTTPSConnectionPool)), "_get_conn(timeout)"),
    ("urllib3", _urllib3_with(connection=SimpleNamespace(
        HTTPConnection=_ConnectionThatConnectsItself,
        HTTPSConnection=urllib3.connection.HTTPSConnection)), "through self._new_conn()"),
    ("httptools", SimpleNamespace(__version__="0.99.0", HttpParserError=ValueError,
                                  HttpResponseParser=type("Parser", (), {"feed_data": None})),
     "should_keep_alive"),
    ("requests", SimpleNamespace(__version__="3.0.0", adapters=SimpleNamespace(
        HTTPAdapter=type("Adapter", (), {}))), "get_connection_with_tls_context"),
])
def test_a_package_lacking_a_part_is_refused_in_one_line(name, module, lacks):
    with pytest.raises(UnsupportedDependency) as caught:
        check({**INSTALLED, name: module})
    message = str(caught.value)
    assert "\n" not in message
    assert f"{name} {module.__version__} is installed" in message
    assert lacks in message
    assert f"supports {name}{SUPPORTED[name]}" in message


def test_the_gateway_refuses_to_start_without_them(database_url, upstream, monkeypatch,
                                                   tmp_path):
    from silk import create_app

    monkeypatch.setitem(sys.modules, "httptools", SimpleNamespace(__version__="0.99.0"))
    with pytest.raises(UnsupportedDependency, match=r"^httptools 0\.99\.0 is installed"):
        create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": database_url,
                    "SECRET_KEY": "test", "SILK_SWEEP_INTERVAL": 0,
                    "SILK_SETTLEMENT_JOURNAL_DIR": str(tmp_path)})


def test_pyproject_pins_the_supported_ranges_and_they_hold_the_installed_versions():
    with open(ROOT / "pyproject.toml", "rb") as file:
        declared = {Requirement(line).name: Requirement(line).specifier
                    for line in tomllib.load(file)["project"]["dependencies"]}
    for name, supported in SUPPORTED.items():
        assert declared[name] == SpecifierSet(supported), name
        assert importlib.metadata.version(name) in SpecifierSet(supported), name
