"""The man pages are rendered from SETTINGS and the CLI parser: every setting appears, roff is safe."""

from __future__ import annotations

import argparse
import re

from sockact import __version__, manpage
from sockact.config import SETTINGS

ENV = {"SOURCE_DATE_EPOCH": "1700000000"}


def _plain(roff: str) -> str:
    """Roff without font escapes and minus-sign escapes, for substring checks."""
    return re.sub(r"\\f[BIR]", "", roff).replace("\\-", "-").replace("\\e", "\\")


def test_every_setting_is_in_sockact_toml_5() -> None:
    page = _plain(manpage.render_sockact_toml_5(ENV))
    for s in SETTINGS:
        assert f"\n{s.name}\n" in page, s.name
        assert s.env in page and s.help.split(".")[0] in " ".join(page.split())


def test_every_cli_setting_is_an_option_of_run_in_sockact_1() -> None:
    page = _plain(manpage.render_sockact_1(manpage.load_parser(), ENV))
    options_of_run = page.split(".SH OPTIONS", 1)[1].split("\n.SH ", 1)[0]
    for s in SETTINGS:
        if s.cli:
            assert s.flag in options_of_run, s.flag
        assert s.env in page


def test_pages_are_reproducible_and_carry_the_version() -> None:
    first = manpage.render_sockact_toml_5(ENV)
    assert first == manpage.render_sockact_toml_5(ENV)
    assert f'"sockact {__version__}"' in first and '"2023-11-14"' in first


def test_options_come_from_the_parser_when_there_is_one() -> None:
    parser = argparse.ArgumentParser(prog="sockact")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run")
    run.add_argument("app_arg", nargs="?", metavar="APP", help="the app")
    run.add_argument("--workers", metavar="N", help="how many (default %(default)s)", default=3)
    run.add_argument("--secret", help=argparse.SUPPRESS)
    options = manpage.cli_options(parser)
    assert list(options) == ["run"]
    synopses = [o.synopsis for o in options["run"]]
    assert synopses == ["\\fIAPP\\fR", "\\fB\\-\\-workers\\fR \\fIN\\fR"]
    assert options["run"][0].help == "the app" and options["run"][0].positional
    # an option that sets a setting is described by the setting's help, not the parser's
    workers = options["run"][1]
    assert workers.setting is not None and workers.help == workers.setting.help


def test_subcommands_with_the_same_options_are_documented_once() -> None:
    page = manpage.render_sockact_1(manpage.load_parser(), ENV)
    assert page.count("\n.SH OPTIONS OF RUN AND CHECK\n") == 1
    assert page.count(".TP\n\\fB\\-w\\fR \\fIN\\fR, \\fB\\-\\-workers\\fR") == 1


def test_roff_escapes_requests_and_backslashes() -> None:
    assert manpage.roff(".TH x\n'quote\na\\b") == "\\&.TH x\n\\&'quote\na\\eb"
    assert manpage.literal("--bind") == "\\-\\-bind"


def test_main_writes_the_page(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", ENV["SOURCE_DATE_EPOCH"])
    out = tmp_path / "sockact.toml.5"
    assert manpage.main(["sockact.toml.5", "-o", str(out)]) == 0
    assert out.read_text() == manpage.render_sockact_toml_5(ENV)
