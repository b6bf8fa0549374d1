"""Schema-driven fuzzing (schemathesis): the OpenAPI document states every rule the server
enforces. Valid and invalid requests are generated from the served schema (bounded
examples) and sent to the app on the demo index:

- no answer is a 5xx;
- every answer conforms to the schema (status, content type, body);
- no valid request is refused: a request the schema accepts gets 2xx, or 404 for a
  well-formed uuid that is not a post (the schema cannot know which uuids exist).

An uploaded image must also be a decodable picture, which a JSON schema cannot state: valid
uploads carry real images from the demo (random bytes are sent as well, and must get a 4xx).
"""

import collections
import io

import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from PIL import Image
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from imgsearch_pipeline.api.app import create_app

from .test_api import Demo, build_demo, demo_env

EXAMPLES = 25  # per operation and mode: the whole test stays well under a minute on 2 cores
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]


def _images(demo: Demo) -> list[bytes]:
    pictures = [demo.image(u) for u in sorted(demo.indexed)[:4]]
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 60, 3), np.uint8)).save(buffer, "PNG")
    return [*pictures, buffer.getvalue()]


def _with_real_image(case, image: bytes) -> None:
    if case.media_type == "multipart/form-data":
        case.body = {"image": image}
    else:
        case.body = image


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory, sample_dataset):
    demo = Demo(build_demo(tmp_path_factory, sample_dataset))
    with TestClient(create_app(demo_env(demo.home))) as client:
        schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
        yield client, schema, _images(demo)


def _run(client, schema, images, mode: GenerationMode) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    problems: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode), image=st.sampled_from(images))
        def exercise(case, image) -> None:
            endpoint = f"{case.operation.method.upper()} {case.operation.path}"
            upload = endpoint == "POST /search"
            if upload and mode.is_positive:
                _with_real_image(case, image)
            kwargs = case.as_transport_kwargs(base_url="http://testserver")
            try:
                request = client.build_request(**{k: v for k, v in kwargs.items() if k != "timeout"})
                request.read()  # the checks quote the request: keep its body readable
            except (TypeError, AttributeError, ValueError):  # not even an HTTP client can send it
                counts["unsendable"] += 1
                return
            response = client.send(request)
            counts["requests"] += 1
            label = f"{endpoint} -> {response.status_code}"
            if response.status_code >= 500:
                counts["5xx"] += 1
                problems.append(f"5xx: {label}")
            if mode.is_positive and 400 <= response.status_code < 500 and response.status_code != 404:
                counts["refused"] += 1
                problems.append(f"valid request refused: {label}: {response.text[:200]}")
            try:
                case.validate_response(response, checks=CHECKS)
            except Exception as error:  # noqa: BLE001 - every kind of violation is counted
                counts["violations"] += 1
                problems.append(f"schema violation: {label}: {str(error)[:300]}")

        try:
            exercise()
        except Unsatisfiable:  # no invalid request exists for it (e.g. /health: no inputs)
            counts["operations without negative cases"] += 1
    counts["problems"] = len(problems)
    print(f"\nfuzz {mode.value}: {dict(counts)}")
    for problem in problems[:10]:
        print("  ", problem)
    return counts


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_fuzzing_finds_no_5xx_no_violation_no_refused_request(fuzzed, mode):
    client, schema, images = fuzzed
    counts = _run(client, schema, images, mode)
    assert counts["requests"] >= EXAMPLES
    assert counts["5xx"] == 0 and counts["violations"] == 0 and counts["refused"] == 0, counts
