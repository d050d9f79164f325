"""Every registered vendor has the same face: options, session, parsing, local venue, docs."""

from __future__ import annotations

import inspect
from pathlib import Path

import click
import msgspec
import pytest

from streamctl.ingest.vendor_api import FeedSession, VendorSpec, resolve
from streamctl.ingest.vendors import VENDORS, vendor_spec

REPO = Path(__file__).resolve().parents[1]
VENDOR_DIR = REPO / "ingest" / "vendors"


def test_every_vendor_folder_is_registered():
    folders = {p.name for p in VENDOR_DIR.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(VENDORS)


@pytest.mark.parametrize("name", sorted(VENDORS))
def test_vendor_face(name):
    spec = VENDORS[name]
    assert isinstance(spec, VendorSpec) and spec.name == name
    folder = VENDOR_DIR / name
    for module in ("options.py", "session.py"):
        assert (folder / module).is_file(), f"{name} lacks {module}"
    # options: a frozen, strict msgspec struct, decodable from YAML-shaped data
    assert issubclass(spec.options, msgspec.Struct)
    assert spec.options.__struct_config__.frozen and spec.options.__struct_config__.forbid_unknown_fields
    # session: the FeedSession face, constructed as Session(options, feed, ctx)
    session = spec.session_type()
    for method in ("open", "poll", "close", "instruments"):
        assert callable(getattr(session, method, None)), f"{name}.Session lacks {method}()"
    assert list(inspect.signature(session).parameters)[:3] == ["options", "feed", "ctx"]
    assert {m for m in dir(FeedSession) if not m.startswith("_")} <= set(dir(session))
    # parsing: resolvable, and defined inside the vendor's folder or a shared format
    parser = resolve(spec.parser)
    assert parser.__module__.startswith((f"streamctl.ingest.vendors.{name}.", "streamctl.ingest.formats."))
    # venue: a click command for `streamctl venue <name>`, or a stated reason why there is none
    if spec.venue is None:
        assert spec.reason_without_venue and not spec.live
    else:
        assert isinstance(spec.venue_command(), click.Command)
        assert (folder / "venue.py").is_file() or (folder / "venue").is_dir()
    if spec.warm_up:
        assert callable(resolve(spec.warm_up))
    assert (REPO / spec.docs).is_file()


def test_live_vendors_have_a_venue():
    assert all(spec.venue for spec in VENDORS.values() if spec.live)


def test_venue_commands_come_from_the_registry():
    from click.testing import CliRunner

    from streamctl.cli.main import cli

    out = CliRunner().invoke(cli, ["venue", "--help"]).output
    for spec in VENDORS.values():
        assert (f"  {spec.name} " in out) == (spec.venue is not None)


def test_unknown_vendor_is_refused_by_name():
    with pytest.raises(ValueError, match="`vendor` must be one of alpaca, cme, databento, ibkr, replay, sim; was nope"):
        vendor_spec("nope")
