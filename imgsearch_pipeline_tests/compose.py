"""docker-compose.yml as data, for the tests that check it and run its commands."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"


def compose() -> dict:
    """The compose file parsed (YAML merge keys resolved, ``${...}`` left as written)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def service_command(service: str, replace: dict[str, str]) -> list[str]:
    """A service's command with some arguments replaced (ports, hosts, container paths)."""
    return [replace.get(arg, arg) for arg in compose()["services"][service]["command"]]
