"""devices.toml: names resolve to URL and token; URLs pass through; bad entries are one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgec.device.inventory import inventory_path, load_inventory, resolve_device
from edgec.errors import BadInputError


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    inventory_path().parent.mkdir(parents=True)
    return inventory_path()


def test_names_resolve_through_devices_toml(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pi.token").write_text("abc\n")
    monkeypatch.setenv("NUC_TOKEN", "xyz")
    config.write_text(f'[devices.pi]\nurl = "http://pi.local:8765/"\ntoken_file = "{tmp_path / "pi.token"}"\ntags = ["arm64"]\n'
                      '[devices.nuc]\nurl = "https://nuc:8765"\ntoken_env = "NUC_TOKEN"\n')
    devices = load_inventory()
    assert devices["pi"].url == "http://pi.local:8765" and devices["pi"].token == "abc" and devices["pi"].tags == ("arm64",)
    assert resolve_device("nuc").token == "xyz"
    assert resolve_device("http://127.0.0.1:9000").token is None


def test_unknown_names_and_bad_urls_are_bad_input(config: Path) -> None:
    config.write_text('[devices.pi]\nurl = "ftp://pi"\n')
    with pytest.raises(BadInputError, match="not an http"):
        load_inventory()
    config.write_text("")
    with pytest.raises(BadInputError, match="no such device"):
        resolve_device("pi")


def test_device_commands_without_aiohttp_name_the_extra(monkeypatch, capsys) -> None:
    import importlib.util

    from edgec.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "aiohttp" else real(name, *a))
    assert main(["devices"]) == 2
    assert capsys.readouterr().err.strip().endswith("pip install 'edgec[agent]'")
