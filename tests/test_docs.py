"""Docs and examples stay true: every command, flag and setting is documented; the example config parses."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import click

from lienthong.config import settings as config
from lienthong.node.cli import cli

ROOT = Path(__file__).resolve().parent.parent


def commands(group: click.Group, prefix: str = "lienthong") -> list[tuple[str, click.Command]]:
    out = []
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            out += commands(command, path)
        else:
            out.append((path, command))
    return out


def test_every_command_and_flag_is_documented() -> None:
    """docs/cli.md has a section per command naming each of its flags."""
    text = (ROOT / "docs" / "cli.md").read_text()
    sections = dict(re.findall(r"^## (lienthong [a-z -]+)\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S))  # names may hold '-'
    for path, command in commands(cli):
        assert path in sections, f"docs/cli.md has no section for `{path}`"
        for param in command.params:
            for flag in getattr(param, "opts", []):
                if flag.startswith("--") and flag not in ("--help",):
                    assert flag in sections[path], f"docs/cli.md does not mention {flag} of `{path}`"


def test_every_setting_is_documented() -> None:
    """docs/configuration.md lists every field of every section of lienthong.toml."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    for section, field in config.Settings.model_fields.items():
        if section == "inbox":
            section, model = "inbox.<agency>", config.InboxSettings
        else:
            model = field.annotation  # type: ignore[assignment]
        for name in model.model_fields:  # type: ignore[union-attr]
            assert f"`{section}.{name}`" in text, f"docs/configuration.md does not document {section}.{name}"


def test_example_config_parses_and_matches_what_init_writes() -> None:
    """config/example.toml is valid and is exactly what `init` writes for such a node."""
    text = (ROOT / "config" / "example.toml").read_text()
    settings = config.validate(tomllib.loads(text))
    assert settings.node.mode == "district" and settings.parent.id == "86"
    assert text == config.render(
        id=settings.node.id,
        name=settings.node.name,
        mode=settings.node.mode,
        listen=settings.server.listen,
        parent=settings.parent.address,
        parent_id=settings.parent.id,
        units=settings.node.units,
    )


def test_readme_first_screen_gives_the_two_commands_and_ci_runs_the_same() -> None:
    """The README's first screen has the demo and test commands; .ci/run calls the same test command."""
    first_screen = "\n".join((ROOT / "README.md").read_text().splitlines()[:25])
    assert "bash scripts/demo.sh" in first_screen and "bash scripts/test.sh" in first_screen
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_readme_copies_files_only_into_inbox_folders_its_init_makes() -> None:
    """Every `cp … NODE/inbox/AGENCY/` in the README follows an `init --dir NODE … --agency AGENCY` (so it works as written)."""
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    made = {(m[1], a) for m in re.finditer(r"lienthong init --dir (\S+)([^\n]*)", text) for a in re.findall(r"--agency (\S+)", m[2])}
    copies = re.findall(r"^cp \S+ (\S+)/inbox/([^/\s]+)/", text, re.MULTILINE)
    assert copies, "the README shows how a file is dropped into an inbox"
    for node, agency in copies:
        assert (node, agency) in made, (
            f"the README copies into {node}/inbox/{agency}/ but no `init --dir {node} --agency {agency}` makes it"
        )
