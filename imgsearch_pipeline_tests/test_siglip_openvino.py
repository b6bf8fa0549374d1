"""SigLIP's CPU runtime, OpenVINO: its vectors against transformers' SiglipModel in fp32 (the
reference, computed here by transformers itself), the converted-model cache reused, the
precision chosen from the CPU's capabilities, and torch when OpenVINO cannot be imported."""

import logging
import sys

import numpy as np
import pytest
from PIL import Image

from imgsearch_pipeline.resources.embedders import MissingDependencyError, SiglipEmbedder, siglip_openvino
from imgsearch_pipeline.resources.embedders.siglip import load_siglip
from imgsearch_pipeline.resources.embedders.siglip_torch import TorchSiglipEncoder

COSINE = 0.9999
TEXTS = ["cat", "a photo of a dog on the beach at sunset", "über café", "x " * 80]


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    sizes = [(64, 64), (120, 80), (33, 200), (500, 375)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


@pytest.fixture(autouse=True)
def fresh_loads():
    load_siglip.cache_clear()
    yield
    load_siglip.cache_clear()


def _load(tiny_siglip, cache, runtime="openvino"):
    return SiglipEmbedder(model_name=str(tiny_siglip), device="cpu", runtime=runtime,
                          openvino_cache=str(cache)).load()


def _reference(tiny_siglip):
    import torch
    from transformers import AutoProcessor, SiglipModel

    processor = AutoProcessor.from_pretrained(tiny_siglip)
    model = SiglipModel.from_pretrained(tiny_siglip).eval()

    def unit(output) -> np.ndarray:
        return torch.nn.functional.normalize(getattr(output, "pooler_output", output), dim=-1).numpy()

    with torch.no_grad():
        images = unit(model.get_image_features(**processor(images=_images(), return_tensors="pt")))
        texts = unit(model.get_text_features(**processor(
            text=TEXTS, padding="max_length", max_length=64, truncation=True, return_tensors="pt")))
    return images, texts


def test_openvino_vectors_match_transformers_fp32(tiny_siglip, tmp_path, monkeypatch):
    # f32 inference precision whatever this CPU has: the conversion's fidelity
    monkeypatch.setattr(siglip_openvino, "cpu_capabilities", lambda core: ["FP32", "INT8"])
    model = _load(tiny_siglip, tmp_path / "cache", runtime="auto")  # a CPU: OpenVINO by itself
    assert isinstance(model, siglip_openvino.OpenVinoSiglipEncoder)
    assert model.numerics == "openvino-f32"
    images, texts = _reference(tiny_siglip)
    ours_images = model.encode_images(_images())
    ours_texts = model.encode_text(TEXTS)
    assert ours_images.dtype == ours_texts.dtype == np.float32
    assert ours_images.shape == images.shape and ours_texts.shape == texts.shape
    assert np.einsum("ij,ij->i", ours_images, images).min() >= COSINE
    assert np.einsum("ij,ij->i", ours_texts, texts).min() >= COSINE
    # batch composition does not change a vector (dynamic batch)
    alone = np.concatenate([model.encode_images([image]) for image in _images()])
    assert np.einsum("ij,ij->i", alone, ours_images).min() >= COSINE


def test_converted_model_is_reused_on_the_second_load(tiny_siglip, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = _load(tiny_siglip, cache)
    files = sorted(first.folder.iterdir())
    assert [f.name for f in files] == ["checksums.json", "image.bin", "image.xml", "manifest.json",
                                       "text.bin", "text.xml"]
    written = {f: f.stat().st_mtime_ns for f in files}
    load_siglip.cache_clear()

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(siglip_openvino, "convert", no_conversion)
    second = _load(tiny_siglip, cache)
    assert second is not first and second.folder == first.folder
    assert {f: f.stat().st_mtime_ns for f in sorted(first.folder.iterdir())} == written
    np.testing.assert_array_equal(second.encode_text(TEXTS), first.encode_text(TEXTS))

    # another openvino version is another key: converted again, beside the first copy
    monkeypatch.undo()
    versions = siglip_openvino.runtime_versions()
    monkeypatch.setattr(siglip_openvino, "runtime_versions", lambda: {**versions, "openvino": "0.0"})
    load_siglip.cache_clear()
    third = _load(tiny_siglip, cache)
    assert third.folder != first.folder and (third.folder / "image.xml").is_file()
    assert (first.folder / "image.xml").stat().st_mtime_ns == written[first.folder / "image.xml"]


def test_a_damaged_cached_model_is_converted_again_never_compiled(tiny_siglip, tmp_path, caplog):
    cache = tmp_path / "cache"
    first = _load(tiny_siglip, cache)
    expected = first.encode_images(_images())
    weights = first.folder / "image.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: same size, other weights
    weights.write_bytes(bytes(data))
    load_siglip.cache_clear()
    with caplog.at_level(logging.WARNING):
        second = _load(tiny_siglip, cache)
    assert "damaged" in caplog.text and "image.bin" in caplog.text
    assert weights.read_bytes() != bytes(data)  # converted again in place of the damaged copy
    np.testing.assert_allclose(second.encode_images(_images()), expected, atol=1e-6)


def test_the_checkpoint_contents_key_the_cache(tiny_siglip, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_siglip, copy)
    digest = siglip_openvino.checkpoint_digest(tiny_siglip)
    assert siglip_openvino.checkpoint_digest(copy) == digest  # contents, not the path
    folder = siglip_openvino.converted_folder(tmp_path / "cache", str(tiny_siglip), tiny_siglip)[0]
    assert siglip_openvino.converted_folder(tmp_path / "cache", str(copy), copy)[0] == folder
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert siglip_openvino.checkpoint_digest(copy) != digest


@pytest.mark.parametrize(("capabilities", "precision"), [
    (["FP32", "INT8", "BIN", "EXPORT_IMPORT"], "f32"),  # avx2 only, as this machine
    (["FP32", "BF16", "INT8", "BIN", "EXPORT_IMPORT"], "bf16"),  # avx512_bf16 or AMX
])
def test_precision_follows_the_cpus_capabilities(tiny_siglip, tmp_path, monkeypatch, capabilities,
                                                 precision):
    import openvino as ov

    asked = []
    monkeypatch.setattr(siglip_openvino, "cpu_capabilities", lambda core: capabilities)
    compile_model = ov.Core.compile_model

    def spy(core, model, device, properties):
        asked.append((device, properties["INFERENCE_PRECISION_HINT"]))
        return compile_model(core, model, device, properties)

    monkeypatch.setattr(ov.Core, "compile_model", spy)
    model = _load(tiny_siglip, tmp_path / "cache")
    assert model.precision == precision
    assert asked == [("CPU", precision), ("CPU", precision)]  # both towers
    if precision == "f32":
        assert model.numerics == "openvino-f32"


def test_this_cpu_takes_the_precision_openvino_reports():
    import openvino as ov

    capabilities = siglip_openvino.cpu_capabilities(ov.Core())
    with open("/proc/cpuinfo") as f:
        flags = set(f.read().split())
    precision = siglip_openvino.inference_precision(capabilities)
    if flags & {"avx512_bf16", "amx_bf16"}:
        assert precision == "bf16"
    elif not flags & {"avx_ne_convert", "avx2_vnni_2"}:  # no bf16 instructions at all
        assert precision == "f32"


def test_without_openvino_a_cpu_falls_back_to_torch(tiny_siglip, tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    with caplog.at_level(logging.WARNING):
        model = _load(tiny_siglip, tmp_path / "cache", runtime="auto")
    assert isinstance(model, TorchSiglipEncoder) and model.numerics == "torch-fp32"
    assert "SigLIP runs through torch fp32 on the CPU: OpenVINO cannot be imported" in caplog.text
    assert not (tmp_path / "cache").exists()
    load_siglip.cache_clear()
    with pytest.raises(MissingDependencyError, match="'openvino'"):
        _load(tiny_siglip, tmp_path / "cache", runtime="openvino")


def test_runtime_choices_are_checked(tiny_siglip, tmp_path):
    with pytest.raises(ValueError, match="unknown SigLIP runtime 'onnx'"):
        _load(tiny_siglip, tmp_path, runtime="onnx")
    with pytest.raises(ValueError, match="on the CPU, not on 'cuda'"):
        SiglipEmbedder(model_name=str(tiny_siglip), device="cuda", runtime="openvino").load()
    assert isinstance(_load(tiny_siglip, tmp_path, runtime="torch"), TorchSiglipEncoder)


def test_parts_record_the_numerics_of_their_vectors(tmp_path):
    from imgsearch_pipeline.core.integrity import write_checked_table
    from imgsearch_pipeline.core.vectors import read_vectors, vector_numerics, vectors_table

    rng = np.random.default_rng(1)
    written = {"openvino-f32": 3, "torch-fp16": 2}
    for numerics, rows in written.items():
        write_checked_table(vectors_table([f"{numerics}-{i}" for i in range(rows)], ["train"] * rows,
                                          "m", rng.normal(size=(rows, 4)), numerics),
                            tmp_path / f"part-{numerics}.parquet")
    write_checked_table(vectors_table(["old"], ["test"], "m", rng.normal(size=(1, 4))),
                        tmp_path / "part-old.parquet")
    assert vector_numerics(tmp_path) == {**written, "unrecorded": 1}
    assert len(read_vectors(tmp_path)[0]) == 6  # the metadata changes nothing a reader sees
