"""Response bodies of the API (they make the OpenAPI schema)."""

from typing import Any, Literal

from pydantic import BaseModel, Field

MAX_K = 100
MAX_CANDIDATES = 1000
MAX_DEPTH = 1000  # offset + k: how deep paging reaches into one ranked list


Mode = Literal["semantic", "keyword", "hybrid"]
FoundBy = Literal["picture", "words", "both"]


class CaptionSegment(BaseModel):
    text: str
    mark: bool = Field(description="A word of the query matched here (shown highlighted).")


class FoldedHit(BaseModel):
    uuid: str = Field(description="Post id (uuid5 of the image bytes).")
    score: float | None = Field(
        None, ge=-1.0, le=1.0,
        description="Cosine similarity of the post's picture to the query (higher is closer); "
                    "null in keyword mode, where no vector is compared.")
    caption: str | None = None
    image_url: str = Field(description="Where the image can be fetched (this API's /images/{uuid}).")
    found_by: FoundBy = Field(
        "picture", description="Why the post was found: its picture is close to the query, its "
                               "caption holds the query's words, or both.")
    keyword_score: float | None = Field(
        None, description="BM25 score of the caption for the query's words (keyword and hybrid "
                          "modes; null where the caption did not match).")
    rrf_score: float | None = Field(
        None, description="Reciprocal rank fusion score, the hybrid ranking's order: the sum "
                          "of 1 / (rank_constant + rank) over the rankings that found the post.")
    matched_terms: list[str] = Field(
        default_factory=list, description="The query's words (as tokens) found in the caption.")
    highlight: list[CaptionSegment] = Field(
        default_factory=list, description="The caption cut into segments, the matched words "
                                          "marked; empty when no word matched.")


class SearchHit(FoldedHit):
    duplicates: int = Field(0, description="Near-identical hits folded into this one (collapse).")
    folded: list[FoldedHit] = Field(
        default_factory=list, description="The folded hits themselves, best first (collapse).")


class Fusion(BaseModel):
    rank_constant: int = Field(description="RRF rank constant (IMGSEARCH_API_RRF_RANK_CONSTANT).")
    window: int = Field(description="Hits of each ranking fused (IMGSEARCH_API_RRF_WINDOW); "
                                    "pages end there.")


class SearchResponse(BaseModel):
    query: Literal["image", "text", "similar"]
    mode: Mode = Field(description="How the hits were ranked: by vector similarity (semantic), "
                                   "by caption words (keyword), or both fused (hybrid).")
    fusion: Fusion | None = Field(None, description="The fusion's settings (hybrid mode).")
    min_score: float | None = Field(None, description="The similarity cutoff applied, if any.")
    note: str | None = Field(None, description="Why the mode differs from the one asked for.")
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
