"""The bounded decode + embed queue: beyond it a request is refused at once, and heavy
uploads have a lane of their own."""

import threading

import anyio
import pytest

from imgsearch_pipeline.api.admission import Lanes, Overloaded


def _blocking(release: threading.Event):
    def job() -> str:
        release.wait(10)
        return "done"
    return job


def test_beyond_the_queue_a_request_is_refused_at_once_and_light_work_goes_on():
    async def scenario() -> None:
        lanes = Lanes(running=1, waiting=1, heavy_pixels=1000)
        release = threading.Event()
        results: list[str] = []

        async def run(pixels: int) -> None:
            results.append(await lanes.run(_blocking(release), pixels))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run, 5000)  # heavy lane: 1 running, max(1, 1 // 4) = 1 waiting
            tasks.start_soon(run, 5000)
            await anyio.sleep(0.05)
            with anyio.fail_after(1), pytest.raises(Overloaded):
                await lanes.run(_blocking(release), 5000)  # refused at once, not queued
            # The ordinary lane is untouched by the heavy flood.
            tasks.start_soon(run, 10)
            await anyio.sleep(0.05)
            assert lanes.ordinary.admitted == 1 and lanes.heavy.admitted == 2
            release.set()
        assert results == ["done"] * 3
        assert lanes.ordinary.admitted == lanes.heavy.admitted == 0

    anyio.run(scenario)
