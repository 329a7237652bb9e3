"""The command line in the operator's language: Vietnamese or English, through gettext.

Which language: `--lang` on the command line, else `LIENTHONG_LANG`, else the locale
(`LC_ALL`, `LC_MESSAGES`, `LANG`: `vi_*` is Vietnamese), else English.

Where translation happens, each in one place so that new commands need nothing:

- help: every command's context formats its help with `LocalisedFormatter`, which looks
  each paragraph of a description and each option's help up in the catalogue as it is
  written (`localise_tree` gives every command of the tree that context, and the whole
  first paragraph of its description as the line `--help` lists it with);
- click's own words (`Usage:`, `Options`, `Error: No such option`…): click's modules call
  `gettext.gettext`; `_install_in_click` points them at this catalogue instead;
- messages: `_()` / `ngettext()` around the strings commands print;
- `Error:` / `Try:` lines: `translate_message` in `cli.main`, by the exact text or by a
  template whose `{0}`, `{1}` stand for the values an f-string put in.

The catalogue is `locale/vi/LC_MESSAGES/lienthong.po`; its compiled `.mo` is committed
beside it so that a clone and an installed wheel read it with the standard library alone
(`scripts/messages.py` extracts with Babel, updates the `.po` and compiles the `.mo`; a
test fails when a message has no Vietnamese or the `.mo` is older than the `.po`).
"""

from __future__ import annotations

import functools
import gettext
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

DOMAIN = "lienthong"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
LANGUAGES = ("en", "vi")
LANG_ENV = "LIENTHONG_LANG"

_active: gettext.NullTranslations = gettext.NullTranslations()
_language = "en"


def language_from_env(environ: Mapping[str, str] | None = None) -> str:
    """'vi' or 'en' from LIENTHONG_LANG, else the locale variables in POSIX order."""
    environ = os.environ if environ is None else environ
    explicit = environ.get(LANG_ENV, "").strip().lower()
    if explicit:
        return "vi" if explicit.startswith("vi") else "en"
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = environ.get(name, "").strip()
        if value:
            return "vi" if value.lower().startswith("vi") else "en"
    return "en"


@functools.cache
def _catalogue(language: str) -> gettext.NullTranslations:
    if language == "en":
        return gettext.NullTranslations()
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=[language], fallback=True)


def choose(language: str) -> None:
    """Speak this language ('vi' or 'en') from now on in this process."""
    global _active, _language
    _language = "vi" if language.lower().startswith("vi") else "en"
    _active = _catalogue(_language)


def language() -> str:
    return _language


def _(message: str) -> str:
    """The message in the chosen language (itself in English, or when the catalogue lacks it)."""
    return _active.gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """'1 item' / '2 items' in English; Vietnamese has one form."""
    return _active.ngettext(singular, plural, n)


def _install_in_click() -> None:
    """Point click's own messages at this catalogue: its modules bound gettext's functions at import."""
    import click.core
    import click.decorators
    import click.exceptions
    import click.formatting
    import click.parser
    import click.termui
    import click.types
    import click.utils

    for module in (click.core, click.decorators, click.exceptions, click.formatting, click.parser, click.termui, click.types, click.utils):
        if hasattr(module, "_"):
            module._ = _  # type: ignore[attr-defined]
        if hasattr(module, "ngettext"):
            module.ngettext = ngettext  # type: ignore[attr-defined]


_install_in_click()


# ------------------------------------------------------------------ help


def paragraphs(text: str) -> list[str]:
    """A description's paragraphs, each on one line: the unit help is translated in."""
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]


def translate_help(text: str) -> str:
    """A description or an option's help, paragraph by paragraph; click's `  [default: …]` kept."""
    if _language == "en" or not text:
        return text
    base, extra = text, ""
    found = re.search(r"\s\s(\[[^\[\]]*\])$", text)
    if found:
        base, extra = text[: found.start()], "  " + found.group(1)
    if not base.strip():
        return text
    return "\n\n".join(_(p) for p in paragraphs(base)) + extra


class LocalisedFormatter(click.HelpFormatter):
    """Click's help formatter, translating descriptions and option help as they are written."""

    def write_text(self, text: str) -> None:
        super().write_text(translate_help(text))

    def write_dl(self, rows: Any, col_max: int = 30, col_spacing: int = 2) -> None:
        super().write_dl([(term, translate_help(help_)) for term, help_ in rows], col_max, col_spacing)


class LocalisedContext(click.Context):
    """A context that renders help with `LocalisedFormatter`; the root one chooses the language."""

    formatter_class = LocalisedFormatter

    def __init__(self, command: click.Command, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("parent") is None and not args:
            choose(language_from_env())
            localise_tree(command)
        super().__init__(command, *args, **kwargs)


def localise_tree(command: click.Command) -> None:
    """Give every command under `command` the localised context and its whole first paragraph as its listed help."""
    command.context_class = LocalisedContext
    if command.help and not command.short_help:
        # click would cut it to fit 80 columns ("Run the node in the…"); people read all of it.
        command.short_help = paragraphs(command.help)[0]
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            localise_tree(sub)


def lang_option(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """`--lang vi|en`: eager, so that `lienthong --lang vi --help` is already Vietnamese."""
    if value:
        choose(value)


def version_option(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """`--version`, in the chosen language (click's own option words it once, at import)."""
    if not value or ctx.resilient_parsing:
        return
    from importlib.metadata import version

    click.echo(_("%(prog)s, version %(version)s") % {"prog": ctx.find_root().info_name, "version": version("lienthong")})
    ctx.exit()


# ------------------------------------------------------------------ messages printed by cli.main


@functools.cache
def _templates(language: str) -> list[tuple[re.Pattern[str], str]]:
    catalogue = _catalogue(language)
    out = []
    for msgid, msgstr in getattr(catalogue, "_catalog", {}).items():
        if not isinstance(msgid, str) or "{0}" not in msgid or not msgstr:
            continue
        pieces = re.split(r"\{(\d+)\}", msgid)
        literal = "".join(pieces[0::2])
        if len(literal.strip()) < 6:
            continue  # "{0}: {1}" would match anything
        pattern = "".join(re.escape(p) if i % 2 == 0 else "(.*?)" for i, p in enumerate(pieces))
        out.append((re.compile(pattern, re.S), msgstr))
    # The most specific first: a longer literal text wins over a shorter one.
    out.sort(key=lambda item: -len(item[0].pattern))
    return out


def translate_message(text: str) -> str:
    """An error's sentence or hint in the chosen language: by its exact text, else by its template."""
    if _language == "en" or not text:
        return text
    exact = _(text)
    if exact != text:
        return exact
    for pattern, msgstr in _templates(_language):
        found = pattern.fullmatch(text)
        if found:
            values = [_(v) if v else v for v in found.groups()]  # an inner sentence the catalogue knows ('' is the header)
            try:
                return msgstr.format(*values)
            except (IndexError, KeyError, ValueError):
                return text
    return text


# Words the command line shows from data (a certificate's or a token's state, a node's mode)
# and table headers made from column names: `_(word)` translates them; listed here so that the
# catalogue has them (an extractor sees only literal strings).
DATA_WORDS = (
    "valid",
    "expired",
    "revoked",
    "unused",
    "used",
    "provincial",
    "district",
    "commune",
    "ward",
    "agency",
    # the kinds of definition named in sync/schedule.py's DefinitionReader errors
    "indicator set",
    "report schedule",
    # table headers, translated where the table is made (`_(column)`)
    "id",
    "source id",
    "source_id",
    "state",
    "assignee",
    "due",
    "status",
    "report",
    "report_type",
    "submitted",
    "submitted_at",
    "resubmitted",
    "level",
    "expected",
    "completeness",
    "timeliness",
    "token",
    "node",
    "created",
    "expires",
    "used at",
    "used from",
    "indicator",
    "period",
    "disaggregation",
    "value",
    "origin",
    "title",
    "category",
    "received_at",
    "description",
)


def data_word(word: str) -> str:
    """A word shown from data (`DATA_WORDS`) in the chosen language."""
    return _active.gettext(word)
