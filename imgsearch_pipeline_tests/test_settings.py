"""One settings module: every variable declared once, read in one place, documented from it."""

import re
import subprocess
from pathlib import Path

import pytest

from imgsearch_pipeline.settings import (
    GROUPS,
    ApiSettings,
    ConfigurationError,
    Settings,
    declared,
    with_tables,
)

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "imgsearch_pipeline"


def test_only_the_settings_module_reads_the_environment():
    found = subprocess.run(["grep", "-rln", "--include=*.py", r"os.environ\|getenv", str(PACKAGE)],
                           capture_output=True, text=True).stdout.split()
    assert [Path(p).relative_to(PACKAGE).as_posix() for p in found] == ["settings.py"]


def test_every_variable_the_code_names_is_declared():
    names = {name for name, _ in declared()}
    used = set()
    for module in PACKAGE.rglob("*.py"):
        used |= set(re.findall(r"\bIMGSEARCH_[A-Z0-9_]+[A-Z0-9]\b", module.read_text()))
    assert used - names == set()


def test_the_docs_tables_are_the_declared_ones():
    """Run ``python -m imgsearch_pipeline.cli settings-docs`` after changing a declaration."""
    documented: set[str] = set()
    for group, doc in GROUPS.items():
        text = (ROOT / doc).read_text()
        assert f"<!-- settings:{group} -->" in text, doc
        assert with_tables(text) == text, f"{doc}: the {group} table differs from settings.py"
        documented |= set(re.findall(r"^\| `(IMGSEARCH_[A-Z0-9_]+)`", text, flags=re.M))
    assert documented == {name for name, _ in declared()}


def test_variables_are_read_with_their_types_and_defaults():
    settings = Settings.read({"IMGSEARCH_PROFILE": " production ", "IMGSEARCH_ES_REPLICAS": "2",
                              "IMGSEARCH_API_KEYS": " a , b,", "IMGSEARCH_API_PUBLIC": "true",
                              "IMGSEARCH_API_CORS_ORIGINS": "https://a.example/, https://b.example",
                              "IMGSEARCH_ES_USERNAME": "", "OTHER": "ignored"})
    assert settings.production and settings.es_replicas == 2
    assert settings.es_username is None  # blank means unset, as in compose's `X=${X:-}`
    assert len(settings.api.key_digests) == 2 and "a" not in settings.api.key_digests
    assert settings.api.public and settings.api.auth_required
    assert settings.api.cors_origins == ("https://a.example", "https://b.example")
    defaults = Settings.read({})
    assert (defaults.profile, defaults.embedder, defaults.dataset) == ("embedded", "siglip", "data/sample")
    assert defaults.api == ApiSettings() and not defaults.api.auth_required


@pytest.mark.parametrize(("env", "message"), [
    ({"IMGSEARCH_PROFILE": "cloud"},
     "unknown profile 'cloud' (IMGSEARCH_PROFILE): choose one of embedded, production"),
    ({"IMGSEARCH_AUTOMATION": "sometimes"}, "choose one of running, stopped"),
    ({"IMGSEARCH_ES_REPLICAS": "-1"},
     "IMGSEARCH_ES_REPLICAS='-1' is not allowed: Input should be greater than or equal to 0"),
    ({"IMGSEARCH_API_PUBLIC": "maybe"}, "IMGSEARCH_API_PUBLIC='maybe' is not allowed"),
    ({"IMGSEARCH_API_PUBLIC_URL": "ftp://x"}, "IMGSEARCH_API_PUBLIC_URL='ftp://x' is not allowed"),
    ({"IMGSEARCH_DATASET": "  "}, "IMGSEARCH_HOME and IMGSEARCH_DATASET must not be empty"),
])
def test_a_bad_value_names_its_variable(env, message):
    with pytest.raises(ConfigurationError) as caught:
        Settings.read(env)
    assert message in str(caught.value)


def test_secrets_never_show_in_a_repr():
    settings = Settings.read({"IMGSEARCH_ES_PASSWORD": "pw-123", "IMGSEARCH_API_KEYS": "key-456",
                              "IMGSEARCH_ALERT_WEBHOOK": "https://hooks.example/s3cret"})
    shown = repr(settings) + str(settings)
    assert "pw-123" not in shown and "key-456" not in shown and "s3cret" not in shown
