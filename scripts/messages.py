"""The command line's message catalogue: extract (Babel), update the .po, compile the .mo.

    .venv/bin/python scripts/messages.py          # extract, merge into vi/.po, compile .mo
    .venv/bin/python scripts/messages.py --check  # exit 1 if a message lacks Vietnamese or the .mo is stale

What is extracted (node/cli_i18n.py says where each is translated):
- `_("…")` and `ngettext("…", "…", n)` in node/ (the web console has its own catalogue);
- every command's description, paragraph by paragraph, and every option's help, from the
  click command tree itself (what `--help` shows, whichever module added the command);
- the sentences and hints of errors raised in node/, config/, adapters/ and sync/ (`fail(…)`, `…Error(…)`,
  and `health`'s `reasons.append(…)`), an f-string's
  values becoming `{0}`, `{1}`: `cli.main` translates `Error:`/`Try:` lines by these templates;
- click's own words that lienthong's help and errors show (`CLICK_MESSAGES`), and the words
  shown from data (`cli_i18n.DATA_WORDS`).

The compiled .mo is committed beside the .po: a clone and an installed wheel both read it
with the standard library; Babel (pinned in pyproject's dev extra) is needed only here.
"""

from __future__ import annotations

import ast
import io
import sys
from collections.abc import Iterator
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
NODE = ROOT / "node"
PO = NODE / "locale" / "vi" / "LC_MESSAGES" / "lienthong.po"
MO = PO.with_suffix(".mo")
# Where the errors an operator meets at the command line are raised.
ERROR_FOLDERS = ("node", "config", "adapters", "sync")

# click's messages that lienthong's help and errors show (msgids exactly as click 8 writes them).
CLICK_MESSAGES = (
    "Usage:",
    "Options",
    "Commands",
    "Show this message and exit.",
    "Show the version and exit.",
    "%(prog)s, version %(version)s",
    "Error: {message}",
    "Try '{command} {option}' for help.",
    "No such command {name!r}.",
    "No such option {name!r}.",
    "Did you mean {possibility}?",
    "Missing command.",
    "Missing option",
    "Missing argument",
    "Missing parameter",
    "Missing {param_type}",
    "Missing parameter: {param_name}",
    "Got unexpected extra argument ({args})",
    "Invalid value: {message}",
    "Invalid value for {param_hint}: {message}",
    "Option {name!r} requires an argument.",
    "Option {name!r} does not take a value.",
    "default: {default}",
    "env var: {var}",
    "required",
    "Aborted!",
    "Repeat for confirmation",
    "Error: The two entered values do not match.",
    "{value!r} is not {choice}.",
    "{value!r} is not a valid {number_type}.",
    "{value} is not in the range {range}.",
    "{value!r} is not a valid boolean. Recognized values: {states}",
    "file",
    "directory",
    "path",
    "{name} {filename!r} does not exist.",
    "{name} {filename!r} is a file.",
    "{name} {filename!r} is a directory.",
    "{name} {filename!r} is not readable.",
    "{name} {filename!r} is not writable.",
    "Could not open file {filename!r}: {message}",
)

# click's messages above that are plural forms (ngettext): their plural.
CLICK_PLURALS = {
    "Got unexpected extra argument ({args})": "Got unexpected extra arguments ({args})",
    "Did you mean {possibility}?": "(Did you mean one of: {possibilities}?)",
    "{value!r} is not {choice}.": "{value!r} is not one of {choices}.",
}


def _template(node: ast.expr) -> str | None:
    """A string constant as it is, an f-string with its values as {0}, {1}…; None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        out, n = [], 0
        for part in node.values:
            if isinstance(part, ast.Constant):
                out.append(str(part.value).replace("{", "{{").replace("}", "}}"))
            else:
                out.append(f"{{{n}}}")
                n += 1
        return "".join(out)
    return None


def error_templates(folder: Path = NODE) -> Iterator[tuple[str, str, int]]:
    """(template, file, line) of every error sentence and hint raised in node/ (not the web console)."""
    for path in sorted(folder.rglob("*.py")):
        if {"web", "wire"} & set(path.relative_to(folder).parts):  # the console's own catalogue; generated code
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call in ast.walk(tree):
            if not isinstance(call, ast.Call):
                continue
            name = call.func.id if isinstance(call.func, ast.Name) else call.func.attr if isinstance(call.func, ast.Attribute) else ""
            receiver = call.func.value if isinstance(call.func, ast.Attribute) else None
            reason = name == "append" and isinstance(receiver, ast.Name) and receiver.id == "reasons"  # health's reasons
            if name != "fail" and not name.endswith("Error") and not reason:
                continue
            for arg in call.args[:2]:
                text = _template(arg)
                if text and any(c.isalpha() for c in text.replace("{", "").replace("}", "")) and len(text.strip()) > 3:
                    yield text, str(path.relative_to(ROOT)), call.lineno


def help_texts() -> Iterator[tuple[str, str]]:
    """(text, where) of every description paragraph and option help of the `lienthong` command tree."""
    import click

    from lienthong.node.cli import cli
    from lienthong.node.cli_i18n import paragraphs

    def walk(command: click.Command, path: str) -> Iterator[tuple[str, str]]:
        for paragraph in paragraphs(command.help or ""):
            yield paragraph, path
        for param in command.params:
            if isinstance(param, click.Option) and param.help:
                for paragraph in paragraphs(param.help):
                    yield paragraph, f"{path} {param.opts[-1]}"
        if isinstance(command, click.Group):
            for name, sub in sorted(command.commands.items()):
                yield from walk(sub, f"{path} {name}")

    yield from walk(cli, "lienthong")


def extract() -> Catalog:
    """Every message the command line shows, as a template catalogue."""
    from lienthong.node.cli_i18n import DATA_WORDS

    catalog = Catalog(project="lienthong", domain="lienthong", charset="utf-8", fuzzy=False)
    method_map = [("web/**.py", "ignore"), ("**.py", "python")]
    for filename, lineno, message, _comments, _context in extract_from_dir(str(NODE), method_map, keywords={"_": None, "ngettext": (1, 2)}):
        catalog.add(message, locations=[(f"node/{filename}", lineno)])
    for text, where in help_texts():
        catalog.add(text, auto_comments=[f"help: {where}"])
    for folder in ERROR_FOLDERS:
        for text, filename, lineno in error_templates(ROOT / folder):
            catalog.add(text, locations=[(filename, lineno)])
    for text in CLICK_MESSAGES:
        plural = CLICK_PLURALS.get(text)
        catalog.add((text, plural) if plural else text, auto_comments=["click"])
    for text in DATA_WORDS:
        catalog.add(text, auto_comments=["shown from data"])
    return catalog


def compiled(po_catalog: Catalog) -> bytes:
    out = io.BytesIO()
    write_mo(out, po_catalog)
    return out.getvalue()


def read_catalogue() -> Catalog:
    with PO.open("rb") as f:
        return read_po(f, locale="vi", domain="lienthong")


def untranslated(template: Catalog, catalogue: Catalog) -> list[str]:
    """The msgids of `template` the Vietnamese catalogue lacks, has empty, or marks fuzzy."""
    missing = []
    for message in template:
        if not message.id:
            continue
        found = catalogue.get(message.id)
        strings = found.string if found is not None else None
        empty = not strings or (isinstance(strings, tuple) and not all(strings))
        if found is None or empty or found.fuzzy:
            missing.append(message.id if isinstance(message.id, str) else message.id[0])
    return missing


def update() -> int:
    template = extract()
    catalogue = read_catalogue() if PO.exists() else Catalog(locale="vi", domain="lienthong", project="lienthong")
    # No dates refreshed: the .po and the committed .mo change only when a message does (merges stay clean).
    catalogue.update(template, no_fuzzy_matching=True, update_creation_date=False)
    catalogue.fuzzy = False
    catalogue.version = "1"
    catalogue.last_translator = "lienthong <vi>"
    catalogue.msgid_bugs_address = "the lienthong issue tracker"
    catalogue.obsolete.clear()
    PO.parent.mkdir(parents=True, exist_ok=True)
    with PO.open("wb") as f:
        write_po(f, catalogue, width=100, sort_output=False, include_lineno=False)  # lines move with every edit
    MO.write_bytes(compiled(read_catalogue()))
    missing = untranslated(template, read_catalogue())
    print(f"{PO.relative_to(ROOT)}: {len(template)} messages, {len(missing)} without Vietnamese; wrote {MO.relative_to(ROOT)}")
    return 0


def check() -> int:
    missing = untranslated(extract(), read_catalogue())
    stale = MO.read_bytes() != compiled(read_catalogue())
    for msgid in missing:
        print(f"untranslated: {msgid!r}", file=sys.stderr)
    if stale:
        print(f"{MO.relative_to(ROOT)} is older than the .po: run scripts/messages.py", file=sys.stderr)
    return 1 if missing or stale else 0


if __name__ == "__main__":
    sys.exit(check() if "--check" in sys.argv[1:] else update())
