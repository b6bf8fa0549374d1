"""Reading an uploaded image into memory only.

Starlette's form parser spools file parts over 1 MB to a temporary file; a user's query
image must never touch the disk, so the API reads the raw body itself (with a size cap)
and parses multipart bodies in memory.
"""

import logging
from collections.abc import AsyncIterator
from typing import NamedTuple

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

FILE_FIELDS = (b"image", b"file")
TEXT_FIELD = b"text"
MAX_TEXT = 500  # characters of a text query, here and in the query parameter
# The parser logs what it finds odd in a client's body; the client gets a 400 that says so.
logging.getLogger("python_multipart").setLevel(logging.ERROR)


class UploadTooLarge(ValueError):
    def __init__(self, limit: int):
        super().__init__(f"upload larger than the limit of {limit:,} bytes")
        self.limit = limit


class BadUpload(ValueError):
    """The request body holds no usable image part; the message says why."""


async def read_capped(chunks: AsyncIterator[bytes], limit: int, declared: str | None) -> bytes:
    """The whole body in memory, refusing it as soon as it passes ``limit`` bytes."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadTooLarge(limit)
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise UploadTooLarge(limit)
    return bytes(body)


class Upload(NamedTuple):
    image: bytes
    text: str | None = None  # a multipart ``text`` field: words searched with the picture


def upload_from_body(body: bytes, content_type: str | None) -> Upload:
    """The image bytes of a request, a multipart ``image`` (or ``file``) part or a raw body,
    and a multipart ``text`` field beside the image, if any."""
    kind, options = parse_options_header(content_type or "")
    if kind == b"multipart/form-data":
        return _multipart_upload(body, options.get(b"boundary"))
    if kind.startswith(b"image/") or kind == b"application/octet-stream":
        return Upload(body)
    raise BadUpload("send the image as multipart/form-data (field 'image') "
                    "or as a raw body with an image/* content type")


def _multipart_upload(body: bytes, boundary: bytes | None) -> Upload:
    if not boundary:
        raise BadUpload("multipart body without a boundary")
    parts: list[bytearray] = []
    header: dict[str, bytes] = {"field": b"", "value": b""}
    names: list[bytes] = []

    def on_part_begin() -> None:
        names.append(b"")
        parts.append(bytearray())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def on_header_end() -> None:
        if header["field"].lower() == b"content-disposition":
            _, options = parse_options_header(header["value"])
            names[-1] = options.get(b"name", b"")
        header["field"] = header["value"] = b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].extend(data[start:end])

    try:  # the parser itself refuses some boundaries (e.g. over 256 bytes) when built
        parser = MultipartParser(boundary, {
            "on_part_begin": on_part_begin, "on_header_field": on_header_field,
            "on_header_value": on_header_value, "on_header_end": on_header_end,
            "on_part_data": on_part_data,
        })
        parser.write(body)
        parser.finalize()
    except (MultipartParseError, ValueError) as error:
        raise BadUpload(f"malformed multipart body: {type(error).__name__}") from None
    fields = dict(zip(names, parts, strict=True))
    image = next((fields[name] for name in FILE_FIELDS if name in fields), None)
    if image is None:
        raise BadUpload("multipart body has no 'image' field")
    return Upload(bytes(image), _text_field(fields.get(TEXT_FIELD)))


def _text_field(data: bytearray | None) -> str | None:
    """The ``text`` field, checked as the ``text`` query parameter is (the schema's limits)."""
    if data is None:
        return None
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise BadUpload("the 'text' field is not UTF-8") from None
    if len(text) > MAX_TEXT:
        raise BadUpload(f"the 'text' field is longer than {MAX_TEXT} characters")
    return text if text.strip() else None
