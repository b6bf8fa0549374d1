"""docker-compose.yml against the Compose Specification's JSON schema, and the properties
`docker compose up -d --wait` relies on. No Docker engine runs here; the stack itself is
smoke-tested by .github/workflows/compose.yml.

The schema is the compose-spec project's ``schema/compose-spec.json`` as vendored by the
check-jsonschema package (``check_jsonschema/builtin_schemas/vendor/compose-spec.json``,
licence ``vendor/licenses/LICENSE.compose-spec``, Apache-2.0).
"""

import copy
import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from .compose import ROOT, compose

VENDOR = "check_jsonschema.builtin_schemas.vendor"
IMGSEARCH_SERVICES = ("code-location", "webserver", "daemon", "api", "minio-init")


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(resources.files(VENDOR).joinpath("compose-spec.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def errors(validator, document: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(document)]


def test_compose_file_follows_the_compose_specification(validator):
    assert resources.files(VENDOR).joinpath("licenses", "LICENSE.compose-spec").is_file()
    assert errors(validator, compose()) == []


@pytest.mark.parametrize("break_it", [
    lambda c: c["services"]["api"].update(helthcheck={"test": ["CMD", "true"]}),  # misspelt key
    lambda c: c["services"]["postgres"].update(volumes="pgdata:/data"),  # a list, not a string
    lambda c: c["services"]["daemon"]["depends_on"]["code-location"].update(condition="ready"),
])
def test_the_schema_catches_mistakes(validator, break_it):
    document = copy.deepcopy(compose())
    break_it(document)
    assert errors(validator, document)


def test_up_wait_has_a_healthcheck_to_wait_for_on_every_server():
    services = compose()["services"]
    one_shot = {name for name, s in services.items() if s.get("restart") == "no"}
    assert one_shot == {"minio-init"}
    for name, service in services.items():
        if name not in one_shot:
            assert service["healthcheck"]["test"], name
        for needed, how in (service.get("depends_on") or {}).items():
            expected = "service_completed_successfully" if needed in one_shot else "service_healthy"
            assert how["condition"] == expected, (name, needed)
    # `up --wait` counts an exited container as a failure unless a running service waits
    # for it to complete (docker/compose#10596).
    adopters = {name for name, s in services.items() if name not in one_shot
                for needed in (s.get("depends_on") or {}) if needed in one_shot}
    assert adopters, "minio-init must be adopted by a long-running service"


def test_the_stack_is_dagsters_deployment_on_one_image():
    services = compose()["services"]
    images = {services[name]["image"] for name in IMGSEARCH_SERVICES}
    assert len(images) == 1
    assert all(services[name]["build"]["dockerfile"] == "Dockerfile" for name in IMGSEARCH_SERVICES)
    assert services["code-location"]["command"][:3] == ["dagster", "code-server", "start"]
    assert services["daemon"]["command"][:2] == ["dagster-daemon", "run"]
    assert services["webserver"]["command"][0] == "dagster-webserver"
    # The Dagster processes share the Postgres settings that deploy/dagster.yaml reads.
    instance = (ROOT / "deploy" / "dagster.yaml").read_text()
    for name in ("code-location", "webserver", "daemon"):
        env = services[name]["environment"]
        for variable in ("DAGSTER_POSTGRES_HOST", "DAGSTER_POSTGRES_PORT", "DAGSTER_POSTGRES_USER",
                         "DAGSTER_POSTGRES_PASSWORD", "DAGSTER_POSTGRES_DB"):
            assert variable in env and f"env: {variable}" in instance, (name, variable)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY deploy/dagster.yaml /opt/dagster/home/dagster.yaml" in dockerfile
    assert "DAGSTER_HOME=/opt/dagster/home" in dockerfile


def test_ports_are_bound_to_loopback_only():
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_secrets_come_from_the_environment_file():
    text = (ROOT / "docker-compose.yml").read_text()
    example = Path(ROOT / ".env.example").read_text()
    for variable in ("ELASTIC_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD",
                     "DAGSTER_POSTGRES_PASSWORD"):
        assert f"${{{variable}:?" in text  # required: compose refuses to start without it
        assert f"\n{variable}=" in example
