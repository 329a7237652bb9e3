"""One contract, every adapter: each installed adapter (and the shipped fake) is held to
the rules of `lienthong.adapters.base.Adapter`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lienthong.adapters.base import Adapter, FileRefused, ParseContext, Row
from lienthong.adapters.fake import FakeAdapter
from lienthong.adapters.registry import Registry, UnknownAdapter
from lienthong.sync import records

from .helpers import cli, status

SAMPLES = Path(__file__).parent / "testdata" / "samples"
THIRDPARTY = Path(__file__).parent / "testdata" / "thirdparty"
BUILT_INS = {"jsonl", "vn-csv", "dhis2-json", "dhis2-csv", "open311", "report-manifest", "xlsx"}

REGISTRY = Registry(extra=[FakeAdapter()])
ADAPTERS = [REGISTRY.get(name) for name in REGISTRY.names()]


def test_built_ins_are_registered_through_the_entry_point_group() -> None:
    """Every built-in loads from `lienthong.adapters`, none is broken, and the fake is not registered."""
    registry = Registry()
    assert set(registry.names()) >= BUILT_INS
    assert registry.broken == {}
    assert "fake" not in registry.names()


def test_unknown_adapter_names_the_installed_ones() -> None:
    """Asking for an adapter that is not installed lists what is."""
    with pytest.raises(UnknownAdapter) as err:
        Registry().get("excel-2003")
    assert "jsonl" in str(err.value) and "vn-csv" in str(err.value)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
def test_adapter_shape(adapter: Adapter) -> None:
    """Name, version, description and kinds are set; it implements the protocol."""
    assert isinstance(adapter, Adapter)
    assert adapter.name and adapter.version and adapter.description
    assert adapter.kinds and adapter.kinds <= set(records.BUILDERS)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
def test_sample_files_it_claims_parse_to_nfc_records(adapter: Adapter, tmp_path: Path) -> None:
    """On every good sample it claims, it yields rows whose records are of its kinds, in NFC."""
    claimed = 0
    for sample in sorted((SAMPLES / "inbox").rglob("*")):
        if not sample.is_file() or not adapter.claims(sample, sample.read_bytes()[:4096]):
            continue
        claimed += 1
        context = ParseContext(origin="86", agency=sample.parent.name, inbox=sample.parent, store_blob=lambda p: "0" * 64)
        rows = list(adapter.parse(sample, context))
        assert rows and all(isinstance(r, Row) for r in rows)
        for row in rows:
            assert (row.record is None) != (row.error is None)
            if row.record is not None:
                assert records.KIND_NAMES[row.record.kind] in adapter.kinds
                assert row.record.unit == unicodedata.normalize("NFC", row.record.unit)
            else:
                assert row.error.message_vi and row.error.message_en and row.error.code
    if adapter.name in BUILT_INS - {"jsonl"}:
        assert claimed, f"{adapter.name} claims none of the agency samples"


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.binary(max_size=2048),
    suffix=st.sampled_from([".csv", ".json", ".report.json", ".jsonl", ".fake", ".txt", ".xlsx", ".xls", ".ods"]),
)
def test_no_bytes_make_it_raise_anything_but_a_refusal(
    adapter: Adapter, tmp_path_factory: pytest.TempPathFactory, data: bytes, suffix: str
) -> None:
    """claims() never raises; parse() yields rows or raises FileRefused, whatever the bytes."""
    folder = tmp_path_factory.mktemp("contract")
    path = folder / f"x{suffix}"
    path.write_bytes(data)
    adapter.claims(path, data[:4096])
    context = ParseContext(origin="86", agency="a", inbox=folder)
    try:
        for row in adapter.parse(path, context):
            assert isinstance(row, Row)
    except FileRefused as exc:
        assert exc.message_vi and exc.message_en


def test_third_party_adapter_installed_from_a_package_ingests(tmp_path: Path, make_node) -> None:
    """A tiny plugin package, installed with pip, is listed and takes files through the same pipeline."""
    site = tmp_path / "site"
    package = tmp_path / "pkg"
    shutil.copytree(THIRDPARTY, package)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(site),
            str(package),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    listed = cli("adapters", "list", "--json", env=env).stdout
    assert '"name": "tsv"' in listed and "lienthong-adapter-tsv" in listed

    node = make_node("86")
    data = tmp_path / "values.tsv"
    data.write_text("86\tKTXH.NS.01\t2026-10\t12.5\n86\tKTXH.NS.02\t2026-13\t3\n", encoding="utf-8")
    out = cli("ingest", "--dir", str(node), "--agency", "thongke", str(data), env=env, check=False)
    assert out.returncode == 1
    assert "1 imported, 0 updated, 0 unchanged, 1 refused [tsv]" in out.stdout
    assert "line 2: period:" in out.stderr
    # An inbox can pin it by name; without the package installed the node says which adapters exist.
    config = node / "lienthong.toml"
    config.write_text(config.read_text() + '\n[inbox.thongke]\nadapter = "tsv"\n')
    failed = cli("run", "--dir", str(node), check=False, timeout=60)
    assert failed.returncode == 1 and "inbox.thongke.adapter: no adapter named 'tsv'" in failed.stderr and "jsonl" in failed.stderr
    assert status(node)["records"]["indicator"] == 1
