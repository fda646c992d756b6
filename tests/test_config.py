from __future__ import annotations

import tomllib
from datetime import timedelta
from pathlib import Path

import pytest

from recommender import config as cfg
from recommender.errors import ConfigError
from recommender.settings import SETTINGS, shown

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_documented_and_the_docs_are_current() -> None:
    docs = (ROOT / "docs/configuration.md").read_text(encoding="utf-8")
    assert docs == cfg.render_docs(), "run `make docs` after changing recommender/settings.py"
    for setting in cfg.SETTINGS:
        assert f"`{setting.key}`" in docs
        assert setting.help.strip(), f"{setting.key} has no help text"


def test_defaults_without_a_file() -> None:
    c = cfg.load(None, env={})
    assert c["store.url"] == "sqlite:///tagwarden.db"
    assert c["store.raw_retention"] == timedelta(days=30)
    assert c["collector.token"] is None
    assert c.teams == () and c.policy_for("any/repo") == cfg.PolicyRule()


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(
        '[store]\nurl = "sqlite:///file.db"\n[collector]\ntoken = "from-file"\n'
        '[[team]]\nname = "payments"\nrepositories = ["payments/*"]\nchannel = "C1"\n'
        'approvers = ["U1", "U2"]\ncool_off = "2h"\nmin_approvals = 2\n'
        '[[policy]]\nrepositories = ["payments/*"]\nkeep_production = 5\n',
        encoding="utf-8",
    )
    c = cfg.load(path, env={"TAGWARDEN_COLLECTOR_TOKEN": "from-env"},
                 overrides={"store.url": "sqlite:///cli.db"})
    assert c["store.url"] == "sqlite:///cli.db"
    assert c["collector.token"].reveal() == "from-env"
    team = c.team_for("payments/api")
    assert team is not None and team.cool_off == timedelta(hours=2) and team.min_approvals == 2
    assert c.team_for("search/api") is None
    assert c.policy_for("payments/api").keep_production == 5
    assert c.policy_for("other").keep_production == 3


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+psycopg://tw:pw@db:5432/tw", "postgresql+psycopg://tw:***@db:5432/tw"),
        ("postgresql+psycopg://:pw@db/tw", "postgresql+psycopg://:***@db/tw"),
        ("postgresql+psycopg://tw:p%40w@db/tw?password=pw&sslmode=require",
         "postgresql+psycopg://tw:***@db/tw?password=***&sslmode=require"),
        ("https://bob:pw@registry.example:5000", "https://bob:***@registry.example:5000"),
        ("postgresql+psycopg://tw@db/tw", "postgresql+psycopg://tw@db/tw"),
        ("sqlite:///tagwarden.db", "sqlite:///tagwarden.db"),
        ("pw", "pw"),
    ],
)
def test_shown_masks_a_urls_password(url: str, expected: str) -> None:
    assert shown(url) == f'"{expected}"'


def test_every_shown_value_reads_back_as_the_same_setting(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[collector]\nbatch_max_delay = "0.25s"\n[registry]\nhosts = ["a", "b"]\n'
                    '[model]\nhorizon = "1w2d"\n', encoding="utf-8")
    c = cfg.load(path, env={"SLACK_BOT_TOKEN": "xoxb-very-secret"})
    rendered = cfg.render_effective(c).splitlines()
    for setting in SETTINGS:
        value = c[setting.key]
        if value is None:
            assert f"# {setting.key} is unset" in rendered
            continue
        text = shown(value)
        if setting.kind == "secret":
            assert text == '"********"' and "very-secret" not in text
        else:
            assert setting.convert(tomllib.loads(f"v = {text}")["v"]) == value, setting.key


def test_the_effective_settings_load_back_as_the_same_configuration(tmp_path: Path) -> None:
    source = tmp_path / "c.toml"
    source.write_text(
        '[store]\nurl = "sqlite:///x.db"\n[registry]\nurl = "http://r:5000"\nhosts = ["r"]\n'
        '[[team]]\nname = "pay"\nrepositories = ["pay/*"]\nchannel = "C1"\ncool_off = "90m"\n'
        '[[team]]\nname = "search"\nrepositories = ["search/*"]\napprover_group = "S1"\n'
        '[[policy]]\nrepositories = ["pay/*"]\nmin_age = "36h"\nprotected_tags = ["v*"]\n',
        encoding="utf-8")
    original = cfg.load(source, env={})
    shown_text = cfg.render_effective(original)
    assert "\n[[policy]]\n" in shown_text and "#   keep_production = 3" in shown_text
    again = tmp_path / "shown.toml"
    again.write_text(shown_text, encoding="utf-8")
    loaded = cfg.load(again, env={})
    assert (loaded.values, loaded.teams, loaded.policies) == (
        original.values, original.teams, original.policies)


def test_without_policies_the_built_in_rule_is_shown_as_a_comment() -> None:
    text = cfg.render_effective(cfg.load(None, env={}))
    assert "[[policy]]" not in text.replace("# No [[policy]]", "")
    assert "#   min_age = \"7d\"" in text
    assert tomllib.loads(text)["store"]["url"] == "sqlite:///tagwarden.db"


def test_secrets_do_not_show_themselves() -> None:
    c = cfg.load(None, env={"SLACK_BOT_TOKEN": "xoxb-very-secret"})
    assert "xoxb-very-secret" not in repr(c)
    assert "xoxb-very-secret" not in str(c["slack.bot_token"])
    assert c["slack.bot_token"].reveal() == "xoxb-very-secret"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[stor]\nurl = 'x'\n", "unknown config section [stor]"),
        ("[store]\nurll = 'x'\n", "unknown setting store.urll"),
        ("[server]\nport = 'eighty'\n", "setting server.port: expected an integer"),
        ("[store]\nraw_retention = 'forever'\n", "setting store.raw_retention: not a duration"),
        ("[[team]]\nrepositories = ['a/*']\n", "[[team]] #1: name is required"),
        ("[[team]]\nname = 'a'\nrepositories = ['a/*']\ncolour = 'red'\n", "unknown key 'colour'"),
        ("[[team]]\nname = 'a'\nrepositories = ['a/*']\nmin_approvals = 0\n",
         "min_approvals must be at least 1"),
        ("[store\n", "config file"),
        ("[log]\nformat = 'xml'\n", "setting log.format: 'xml' is not one of text, json"),
        ("[log]\nlevel = 'loud'\n", "setting log.level: 'loud' is not one of debug, info"),
    ],
)
def test_bad_configuration_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        cfg.load(path, env={})
    assert message in str(info.value)


def test_missing_file_is_one_readable_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        cfg.load(tmp_path / "nope.toml", env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[collector]\nmax_body_bytes = -1\n",
         "setting collector.max_body_bytes: -1 is out of range (allowed: at least 1)"),
        ("[collector]\nbatch_max_events = 0\n",
         "setting collector.batch_max_events: 0 is out of range (allowed: at least 1)"),
        ("[server]\nport = 70000\n",
         "setting server.port: 70000 is out of range (allowed: 0 to 65535)"),
        ("[model]\ntarget_precision = 1.5\n",
         "setting model.target_precision: 1.5 is out of range (allowed: 0.0 to 1.0)"),
        ("[executor]\nlease = \"0s\"\n",
         "setting executor.lease: 0s is out of range (allowed: at least 1s)"),
    ],
)
def test_a_value_outside_its_range_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        cfg.load(path, env={})
    assert caught.value.message == message


def test_ranges_apply_to_the_environment_and_overrides_and_bounds_are_allowed() -> None:
    with pytest.raises(ConfigError, match="collector.batch_max_events: 0 is out of range"):
        cfg.load(env={}, overrides={"collector.batch_max_events": "0"})
    with pytest.raises(ConfigError, match="collector.max_body_bytes: -1 is out of range"):
        cfg.load(env={}).replace(collector__max_body_bytes=-1)
    config = cfg.load(env={}, overrides={"collector.batch_max_events": 1, "server.port": 0,
                                         "model.target_precision": 1.0})
    assert config["collector.batch_max_events"] == 1 and config["server.port"] == 0


def test_the_docs_show_each_range() -> None:
    docs = cfg.render_docs()
    assert "| `collector.max_body_bytes` | 4194304 | at least 1 |" in docs
    assert "| `server.port` | 8080 | 0 to 65535 |" in docs
