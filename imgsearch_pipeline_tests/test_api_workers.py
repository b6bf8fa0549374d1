"""Signed image links across processes: every worker (or replica) given the same settings
signs with the same secret, so a link one process gave is accepted by any other."""

import json
import os
import re
from http.client import HTTPConnection
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from imgsearch_pipeline.api.app import create_app
from imgsearch_pipeline.api.auth import LinkSigner
from imgsearch_pipeline.api.settings import ApiSettings
from imgsearch_pipeline.settings import ConfigurationError, Settings

from .servers import Processes, free_port, venv_command, wait_for
from .test_api import Demo, build_demo, demo_env

KEYS = "first-key-0123456789,second-key-abcdef"
SECRET = "a-link-secret-of-more-than-32-characters"
UUID = "6839c972-158c-58e2-81fd-7cd990fff709"


@pytest.fixture(scope="module")
def demo(tmp_path_factory, sample_dataset) -> Demo:
    return Demo(build_demo(tmp_path_factory, sample_dataset))


def _signer(**env: str) -> LinkSigner:
    return LinkSigner.from_settings(_api(env))


def _accepts(signer: LinkSigner, query: str, uuid: str = UUID) -> bool:
    fields = dict(part.split("=", 1) for part in query.split("&"))
    return signer.valid(uuid, int(fields["exp"]), fields["sig"])


# -- the secret: from the settings, the same in every process ---------------------------


def test_processes_with_different_secrets_refuse_each_others_links():
    # What happened with a secret made per process: another worker refused the link.
    link = _signer(IMGSEARCH_API_KEYS=KEYS).query(UUID)
    assert not _accepts(_signer(IMGSEARCH_API_KEYS="another-key-0123456789"), link)
    assert not _accepts(_signer(IMGSEARCH_API_KEYS=KEYS, IMGSEARCH_API_LINK_SECRET=SECRET), link)
    explicit = _signer(IMGSEARCH_API_KEYS=KEYS, IMGSEARCH_API_LINK_SECRET=SECRET).query(UUID)
    assert not _accepts(_signer(IMGSEARCH_API_KEYS=KEYS,
                                IMGSEARCH_API_LINK_SECRET=SECRET.upper()), explicit)


def test_processes_with_the_same_settings_accept_each_others_links():
    link = _signer(IMGSEARCH_API_KEYS=KEYS).query(UUID)
    assert _accepts(_signer(IMGSEARCH_API_KEYS=KEYS), link)
    # Derived from the set of keys: their order and spacing do not matter.
    assert _accepts(_signer(IMGSEARCH_API_KEYS=" second-key-abcdef , first-key-0123456789,"), link)
    assert not _accepts(_signer(IMGSEARCH_API_KEYS=KEYS), link, uuid=UUID.replace("6", "7"))


def test_an_explicit_link_secret_survives_a_key_rotation():
    link = _signer(IMGSEARCH_API_KEYS=KEYS, IMGSEARCH_API_LINK_SECRET=SECRET).query(UUID)
    rotated = _signer(IMGSEARCH_API_KEYS="a-new-key-0123456789", IMGSEARCH_API_LINK_SECRET=SECRET)
    assert _accepts(rotated, link)
    # Without one, a rotation changes the derived secret and ends the links given before it.
    assert not _accepts(_signer(IMGSEARCH_API_KEYS="a-new-key-0123456789"),
                        _signer(IMGSEARCH_API_KEYS=KEYS).query(UUID))


def test_the_derived_secret_is_not_a_key_or_its_digest():
    settings = _api({"IMGSEARCH_API_KEYS": "only-key-0123456789"})
    secret = LinkSigner.from_settings(settings)._secret
    assert secret not in (b"only-key-0123456789", settings.key_digests[0].encode(),
                          bytes.fromhex(settings.key_digests[0]))


def test_a_short_link_secret_is_refused_and_never_shown():
    with pytest.raises(ConfigurationError, match="IMGSEARCH_API_LINK_SECRET") as refused:
        _api({"IMGSEARCH_API_KEYS": KEYS,
                              "IMGSEARCH_API_LINK_SECRET": "short-secret-xyz"})
    assert "32 characters" in str(refused.value) and "short-secret-xyz" not in str(refused.value)


def test_the_link_secret_is_never_shown_and_blank_is_unset():
    settings = _api({"IMGSEARCH_API_KEYS": KEYS, "IMGSEARCH_API_LINK_SECRET": SECRET})
    assert settings.link_secret is not None and SECRET not in repr(settings) + str(settings)
    assert SECRET not in settings.model_dump_json()
    blank = _api({"IMGSEARCH_API_KEYS": KEYS, "IMGSEARCH_API_LINK_SECRET": " "})
    assert blank.link_secret is None  # as compose passes an unset variable


def test_without_keys_links_stay_unsigned(demo):
    # Keys off: images are open, so no link is signed, a configured link secret or not.
    env = {**demo_env(demo.home), "IMGSEARCH_API_LINK_SECRET": SECRET}
    with TestClient(create_app(env)) as client:
        hits = client.get(f"/images/{sorted(demo.indexed)[0]}/similar?k=3").json()["hits"]
    assert hits and all(h["image_url"] == f"/images/{h['uuid']}" for h in hits)


# -- a real server with two worker processes --------------------------------------------

# uvicorn's own formatters with the process id in front: which worker answered each request.
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "default": {"()": "uvicorn.logging.DefaultFormatter", "use_colors": False,
                    "fmt": "pid=%(process)d %(levelname)s %(message)s"},
        "access": {"()": "uvicorn.logging.AccessFormatter", "use_colors": False,
                   "fmt": 'pid=%(process)d access "%(request_line)s" %(status_code)s'},
    },
    "handlers": {
        "default": {"class": "logging.StreamHandler", "formatter": "default",
                    "stream": "ext://sys.stderr"},
        "access": {"class": "logging.StreamHandler", "formatter": "access",
                   "stream": "ext://sys.stdout"},
    },
    "loggers": {
        "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
    },
}
WORKERS = 2
FETCHES = 40


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One request on a new connection, so the kernel hands it to any worker."""
    connection = HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers={"Connection": "close", **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _pids(log: str, pattern: str) -> list[int]:
    return [int(m.group(1)) for m in re.finditer(rf"^pid=(\d+) {pattern}", log, re.MULTILINE)]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_signed_link_works_on_every_worker(demo, tmp_path):
    (tmp_path / "log.json").write_text(json.dumps(LOG_CONFIG))
    # Only the variables of this server: none of the caller's IMGSEARCH_* (keys, profile...).
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGSEARCH_")}
    env.update(demo_env(demo.home), IMGSEARCH_API_KEYS=KEYS,
               IMGSEARCH_API_VECTOR_CACHE=str(tmp_path / "vectors"), PYTHONUNBUFFERED="1",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    port = free_port()
    servers = Processes(tmp_path, env)
    try:
        servers.start("api", [venv_command("uvicorn"), "imgsearch_pipeline.api.app:app",
                              "--host", "127.0.0.1", "--port", str(port),
                              "--workers", str(WORKERS), "--log-config", "log.json"])
        # A worker accepts connections only once its app has started: wait for both.
        wait_for("uvicorn workers", lambda: len(set(_pids(
            servers.log("api", tail=10**6), "INFO Application startup complete"))) == WORKERS,
            timeout_s=180, alive=lambda: servers.dead("api"))

        uuid = sorted(demo.indexed)[0]
        status, body = _get(port, f"/images/{uuid}/similar?k=3",
                            headers={"X-API-Key": "second-key-abcdef"})
        assert status == 200, body
        hit = json.loads(body)["hits"][0]
        link = hit["image_url"]
        assert link.startswith(f"/images/{hit['uuid']}?exp=") and "&sig=" in link
        image = demo.image(hit["uuid"])

        answers = [_get(port, link) for _ in range(FETCHES)]
        refused = [status for status, _ in answers if status != 200]
        assert not refused, f"{len(refused)} of {FETCHES} fetches refused: {refused}"
        assert all(body == image for _, body in answers)

        # Both workers answered the link (the kernel may favour one: a few more fetches then).
        link_line = re.escape(f'access "GET {link} HTTP/1.1" 200')
        extra = 0
        while len(set(_pids(servers.log("api", tail=10**6), link_line))) < WORKERS and extra < 200:
            status, _ = _get(port, link)
            assert status == 200
            extra += 1
        pids = _pids(servers.log("api", tail=10**6), link_line)
        assert len(pids) == FETCHES + extra, "every fetch is in the access log"
        assert len(set(pids)) == WORKERS, f"answered by {sorted(set(pids))} only"
        tampered = link[:-1] + ("0" if link[-1] != "0" else "1")
        assert _get(port, tampered)[0] == 401  # the signature is still checked
        log = servers.log("api", tail=10**6)
        assert "secret derived from the API keys" in log  # the operator is told, keys unshown
        assert not any(key in log for key in KEYS.split(","))
    finally:
        servers.stop_all()


def _api(env: dict) -> ApiSettings:
    return Settings.read(env).api
