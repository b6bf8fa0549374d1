"""Response bodies of the API (they make the OpenAPI schema)."""

from typing import Any, Literal

from pydantic import BaseModel, Field

MAX_K = 100
MAX_CANDIDATES = 1000
MAX_DEPTH = 1000  # offset + k: how deep paging reaches into one ranked list


class FoldedHit(BaseModel):
    uuid: str = Field(description="Post id (uuid5 of the image bytes).")
    score: float = Field(ge=-1.0, le=1.0,
                         description="Cosine similarity to the query (higher is closer).")
    caption: str | None = None
    image_url: str = Field(description="Where the image can be fetched (this API's /images/{uuid}).")


class SearchHit(FoldedHit):
    duplicates: int = Field(0, description="Near-identical hits folded into this one (collapse).")
    folded: list[FoldedHit] = Field(
        default_factory=list, description="The folded hits themselves, best first (collapse).")


class SearchResponse(BaseModel):
    query: Literal["image", "text", "similar"]
    k: int
    offset: int = Field(0, description="Rank of the first hit in the whole list (0-based).")
    next_offset: int | None = Field(
        None, description="`offset` of the next page; null when the list ends or the next page "
                          f"would start at rank {MAX_DEPTH}.")
    model_id: str
    index_version: str
    num_candidates: int = Field(description="Search depth used: the request's, else the index "
                                            "version's own (chosen when it was evaluated).")
    hits: list[SearchHit]
    timings_ms: dict[str, float] = Field(
        description="Server time per stage: decode, embed, search (also in Server-Timing).")


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    index_loaded: bool
    documents: int = 0
    index_version: str | None = Field(None, description="The version this process serves.")
    live_version: str | None = Field(
        None, description="The version the index marks live now; served within seconds.")
    num_candidates: int | None = Field(
        None, description="The served version's search depth, used unless a request asks "
                          "for another.")
    model_id: str | None = None
    backend: str | None = None
    text_search: bool = False
    message: str | None = None


class ErrorResponse(BaseModel):
    message: str
    detail: Any | None = None


ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 422, 503)}
