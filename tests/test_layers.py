"""The layers of silk/ import one way: surfaces (blueprints, commands) over services over pure
modules. Read from the source with `ast`, every import counted, those inside functions too.

The rules:
- silk/upstream/ imports nothing of ops, billing, metering, accounts or any surface; of the
  catalogue only its data module, silk.catalog.catalogue (failovers reach the metrics
  through UpstreamClient's on_failover callback).
- silk/metering/ imports nothing of billing, the catalogue, upstream, the relay or any
  surface; of ops only silk.ops.metrics (the metering counts what it writes off), of accounts
  only the table silk.account.models (the sweeper is handed tiers and prices).
- silk/ops/metrics.py imports no silk module, so nothing can close a circle through it (the
  request log reaches it; it reaches the request log only through a listener).
- No module imports another package's blueprint module (one that makes a `Blueprint`): only
  the app factory, silk/__init__.py, mounts them.
- A blueprint module runs no SQL: no SQLAlchemy statement builders, no `execute`, and of
  `db.session` only the request's session lifecycle (close, remove, rollback). Handing
  `db.engine` or a connection to a service is allowed.
- Every `flask silk` command about accounts, keys or invites is defined in
  silk/account/commands.py.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

SILK = Path(__file__).resolve().parents[1] / "silk"

UPSTREAM_MAY_NOT = ("silk.ops", "silk.billing", "silk.metering", "silk.account", "silk.chat",
                    "silk.relay", "silk.web", "silk.admin", "silk.catalog", "silk.openapi",
                    "silk.cli")
UPSTREAM_MAY = ("silk.catalog.catalogue",)
METERING_MAY_NOT = ("silk.billing", "silk.catalog", "silk.upstream", "silk.relay", "silk.chat",
                    "silk.web", "silk.admin", "silk.ops", "silk.account", "silk.openapi",
                    "silk.cli")
METERING_MAY = ("silk.ops.metrics", "silk.account.models")
SESSION_LIFECYCLE = {"close", "remove", "rollback"}
STATEMENT_BUILDERS = {"select", "insert", "update", "delete", "text"}


def _name(path: Path) -> str:
    parts = path.relative_to(SILK.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, tuple[Path, ast.Module]]:
    return {_name(path): (path, ast.parse(path.read_text(), str(path)))
            for path in sorted(SILK.rglob("*.py"))}


def _imports(module: str) -> set[str]:
    """Every silk module `module` imports (`from silk.x import y` counts silk.x.y when y is
    a module, else silk.x), wherever the import statement stands."""
    path, tree = _modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                parts = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in _modules() else base)
    return {name for name in found if name == "silk" or name.startswith("silk.")}


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _breaches(package: str, may_not: tuple[str, ...], may: tuple[str, ...]) -> list[str]:
    return [f"{module} imports {name}"
            for module in _modules() if module == package or module.startswith(package + ".")
            for name in sorted(_imports(module))
            if _under(name, may_not) and not _under(name, may)]


def _blueprint_modules() -> set[str]:
    return {module for module, (_, tree) in _modules().items()
            if any(isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Blueprint"
                   for node in ast.walk(tree))}


def test_the_upstream_clients_import_no_service_or_surface():
    assert _breaches("silk.upstream", UPSTREAM_MAY_NOT, UPSTREAM_MAY) == []


def test_metering_imports_no_billing_catalogue_or_surface():
    assert _breaches("silk.metering", METERING_MAY_NOT, METERING_MAY) == []


def test_the_metrics_import_no_silk_module():
    assert _imports("silk.ops.metrics") == set()


def test_no_module_imports_another_packages_blueprint():
    blueprints = _blueprint_modules()
    assert {"silk.account.views", "silk.billing.views", "silk.web.views"} <= blueprints
    breaches = []
    for module in _modules():
        if module == "silk":
            continue  # the app factory mounts every blueprint
        package = module.rpartition(".")[0]
        for name in _imports(module):
            if name in blueprints and name.rpartition(".")[0] != package:
                breaches.append(f"{module} imports {name}")
    assert breaches == []


def _queries(tree: ast.Module) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            found += [f"imports {alias.name}" for alias in node.names
                      if alias.name in STATEMENT_BUILDERS]
        elif isinstance(node, ast.Attribute):
            on_session = ast.unparse(node.value) == "db.session"
            if node.attr == "execute" or (on_session and node.attr not in SESSION_LIFECYCLE):
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_no_blueprint_module_runs_sql():
    breaches = {module: _queries(_modules()[module][1]) for module in _blueprint_modules()}
    assert {module: found for module, found in breaches.items() if found} == {}


def test_the_rules_see_what_they_forbid():
    """The readers above find a leak where there is one (so an empty list means none)."""
    view = ast.parse("from sqlalchemy import select\n"
                     "def balance():\n"
                     "    return db.session.get(Account, 1).balance_units\n"
                     "def ready():\n"
                     "    db.session.close()\n")
    assert _queries(view) == ["imports select", "line 3: db.session.get"]
    assert "silk.errors" in _imports("silk.upstream.client")
    assert "silk.account.schemas" in _imports("silk.admin.accounts")
    assert _under("silk.catalog", UPSTREAM_MAY_NOT) and not _under("silk.catalogs", ("silk.c",))


ACCOUNT_COMMAND = re.compile(r"(^|-)(account|accounts|key|keys|invites)(-|$)")


def test_account_commands_live_in_the_account_package():
    import click

    from silk.cli import silk_cli

    context = click.Context(silk_cli)
    names = silk_cli.list_commands(context)
    assert {"create-account", "create-key", "list-keys", "revoke-key", "credit"} <= set(names)
    misplaced = [name for name in names if ACCOUNT_COMMAND.search(name)
                 and silk_cli.get_command(context, name).callback.__module__
                 != "silk.account.commands"]
    assert misplaced == []


SURFACES = ("silk.chat", "silk.messages", "silk.responses")


def test_no_surface_is_imported_below_it_or_by_another_surface():
    """The relay, the Meter and the transports know no surface; surfaces share code only
    through what lies below them (silk/relay/, silk/)."""
    for package in ("silk.relay", "silk.metering", "silk.upstream"):
        assert _breaches(package, SURFACES, ()) == [], package
    for surface in SURFACES:
        others = tuple(name for name in SURFACES if name != surface)
        assert _breaches(surface, others, ()) == [], surface
    assert _breaches("silk.responses", ("silk.chat",), ()) == []
    assert "silk.relay.call" in _imports("silk.responses.translate")
    assert _breaches("silk.messages", ("silk.chat",), ()) == []
    assert "silk.relay.call" in _imports("silk.messages.translate")
