"""One exception tree: every error a user can see derives from LienthongError and carries a hint."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

import lienthong.adapters
import lienthong.config
import lienthong.node
import lienthong.sync
from lienthong.adapters import numbers, periods
from lienthong.adapters.base import FileRefused, ParseContext
from lienthong.adapters.jsonl import JsonLinesAdapter
from lienthong.adapters.registry import Registry, UnknownAdapter
from lienthong.config import settings as config
from lienthong.node.trust.audit_chain import AuditError, parse_head
from lienthong.node.trust.tokens import EnrollError, parse_token
from lienthong.sync import provenance, records
from lienthong.sync import sqlite as sqlite_helpers
from lienthong.sync.errors import ConfigError, InputError, LienthongError, SchemaTooNew, StoreError, TrustError
from lienthong.sync.store import Store

from .helpers import cli

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (lienthong.adapters, lienthong.config, lienthong.node, lienthong.sync)


def project_modules() -> list[str]:
    """Every module of the installed package, but generated code and the `python -m` entry point."""
    names = []
    for package in PACKAGES:
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if ".wire" not in info.name and not info.name.endswith("__main__"):
                names.append(info.name)
    return names


def error_classes() -> dict[str, type[BaseException]]:
    """Every public exception class defined in the project, by qualified name."""
    found: dict[str, type[BaseException]] = {}
    for name in project_modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == name and not attr.startswith("_"):
                found[f"{name}.{attr}"] = value
    return found


def test_every_error_class_is_in_the_one_tree() -> None:
    """Each public exception class of config/, sync/, node/ and adapters/ derives from LienthongError."""
    classes = error_classes()
    assert {
        "lienthong.config.errors.ConfigError",
        "lienthong.adapters.base.FileRefused",
        "lienthong.adapters.registry.UnknownAdapter",
    } <= set(classes)
    outside = [name for name, cls in classes.items() if not issubclass(cls, LienthongError)]
    assert not outside, f"outside the tree: {outside}"


def test_sync_errors_draws_and_exports_every_class() -> None:
    """The tree drawn in sync/errors.py names every error class; ConfigError and the root are importable from there."""
    import lienthong.sync.errors as errors

    doc = errors.__doc__ or ""
    for name, cls in error_classes().items():
        assert f" {cls.__name__} " in doc, f"{name} is not drawn in lienthong.sync.errors"
    assert errors.ConfigError is config.ConfigError and errors.LienthongError.__module__ == "lienthong.config.errors"


def _refused_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    list(JsonLinesAdapter().parse(empty, ParseContext(origin="86", agency="thongke", inbox=tmp_path)))


def _schema_too_new(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    try:
        conn.execute("PRAGMA user_version=99")
        sqlite_helpers.migrate(conn, {1: lambda c: None}, "the test database")
    finally:
        conn.close()


def _bad_signing_key(tmp_path: Path) -> None:
    (tmp_path / "signing.key").write_text("not a key")
    provenance.load_or_make_signing_key(tmp_path / "signing.key", lambda path, data: None)


# Each class, raised the way the code raises it (replication errors are covered by the static test below).
RAISED: dict[type[LienthongError], Callable[[Path], object]] = {
    ConfigError: lambda tmp: config.load(tmp),
    InputError: lambda tmp: records.indicator_value("86", {}),
    StoreError: lambda tmp: Store.open(tmp / "none.db"),
    SchemaTooNew: _schema_too_new,
    TrustError: _bad_signing_key,
    EnrollError: lambda tmp: parse_token("not a token"),
    AuditError: lambda tmp: parse_head("nonsense"),
    UnknownAdapter: lambda tmp: Registry().get("no-such-adapter"),
    FileRefused: _refused_file,
    periods.PeriodError: lambda tmp: periods.canonical("Tháng 13/2026"),
    numbers.NumberError: lambda tmp: numbers.parse_vietnamese("12.45"),
}


@pytest.mark.parametrize("cls", list(RAISED), ids=lambda cls: cls.__name__)
def test_each_error_raised_the_usual_way_has_a_message_and_a_hint(cls: type[LienthongError], tmp_path: Path) -> None:
    """Raised by the code that raises it, each error is a LienthongError with a message and a non-empty hint."""
    with pytest.raises(cls) as err:
        RAISED[cls](tmp_path)
    assert isinstance(err.value, LienthongError)
    assert err.value.message and err.value.hint


def test_old_bases_still_catch() -> None:
    """Callers that caught the built-in bases still do: PeriodError and NumberError are ValueErrors, UnknownAdapter a LookupError."""
    assert issubclass(periods.PeriodError, ValueError) and issubclass(numbers.NumberError, ValueError)
    assert issubclass(UnknownAdapter, LookupError)


def test_every_raise_in_the_project_gives_a_hint() -> None:
    """Wherever the code raises a tree error by its class, it passes a hint (or the class supplies its own)."""
    classes = {cls.__name__ for cls in error_classes().values()} | {"LienthongError", "ConfigError", "_Refused"}

    def builds_its_own_hint(cls: type[BaseException]) -> bool:  # no hint parameter, or a non-empty default
        hint = inspect.signature(cls).parameters.get("hint")
        return hint is None or bool(hint.default)

    own_hint = {cls.__name__ for cls in error_classes().values() if builds_its_own_hint(cls)}
    assert {"FileRefused", "UnknownAdapter", "PeriodError", "NumberError", "EpochChanged"} <= own_hint
    missing = []
    for folder in ("adapters", "config", "node", "sync"):
        for path in sorted((ROOT / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                    continue
                func = node.exc.func
                name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
                if name not in classes or name in own_hint:
                    continue
                if len(node.exc.args) < 2 and not any(k.arg == "hint" for k in node.exc.keywords):
                    missing.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert not missing, f"raised without a hint: {missing}"


def test_cli_prints_config_and_adapter_errors_as_error_and_try(tmp_path: Path) -> None:
    """A config error and an unknown adapter reach the operator as `Error:` / `Try:`, exit code 1, no traceback."""
    node = tmp_path / "86"
    node.mkdir()
    (node / "lienthong.toml").write_text('[node]\nid = "86"\nmode = "provincial"\n[server]\nlisten = "foo"\n')
    out = cli("ingest", "--dir", str(node), str(node / "lienthong.toml"), check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("Error: ") and "server.listen: must be host:port (got 'foo')" in out.stderr
    assert "\nTry: fix the value in " in out.stderr

    (node / "lienthong.toml").write_text(config.render(id="86", name="", mode="provincial", listen="127.0.0.1:1", parent=""))
    out = cli("ingest", "--dir", str(node), "--adapter", "nope", str(node / "lienthong.toml"), check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert (
        out.stderr
        == "Error: no adapter named 'nope'; installed: "
        + ", ".join(Registry().names())
        + "\nTry: use a name from `lienthong adapters list`\n"
    )
