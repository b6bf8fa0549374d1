"""Asset checks: the invariants each stage promises, and the recall gate before publishing."""

import dagster as dg
import numpy as np
import pyarrow.parquet as pq

from .artifacts import EmbeddingSet, IndexBuild, PostsTable
from .assets.embeddings import image_embeddings
from .assets.evaluation import recall_report
from .assets.index import search_index
from .assets.posts import posts
from .core.posts_table import uuids_of_split
from .core.vectors import read_vectors
from .resources.vector_index import VectorIndex


class RecallGateConfig(dg.Config):
    target: float = 0.99


@dg.asset_check(asset=posts, description="No uuid is in both train and test.")
def split_is_disjoint(posts: PostsTable) -> dg.AssetCheckResult:
    table = pq.read_table(posts.path, columns=["uuid", "split"])
    uuids = table.column("uuid").to_pylist()
    overlap = uuids_of_split(posts.path, "train") & uuids_of_split(posts.path, "test")
    return dg.AssetCheckResult(
        passed=not overlap and len(uuids) == len(set(uuids)),
        metadata={"overlap": len(overlap), "duplicate_uuids": len(uuids) - len(set(uuids))},
    )


@dg.asset_check(asset=image_embeddings,
                description="Vectors are finite, unit length, with the model's dims.")
def embeddings_are_unit_vectors(image_embeddings: EmbeddingSet) -> dg.AssetCheckResult:
    _, vectors = read_vectors(image_embeddings.folder)
    if vectors.size == 0:
        return dg.AssetCheckResult(passed=False, metadata={"rows": 0})
    norms = np.linalg.norm(vectors, axis=1)
    finite = bool(np.isfinite(vectors).all())
    worst = float(np.abs(norms - 1.0).max())
    return dg.AssetCheckResult(
        passed=finite and worst < 1e-3 and vectors.shape[1] == image_embeddings.dim,
        metadata={"rows": len(vectors), "dims": int(vectors.shape[1]), "finite": finite,
                  "max_norm_error": worst},
    )


@dg.asset_check(
    asset=search_index,
    additional_ins={"posts": dg.AssetIn("posts"), "image_embeddings": dg.AssetIn("image_embeddings")},
    description="The backend holds exactly the train embeddings.",
)
def index_count_matches_train(
    search_index: IndexBuild,
    posts: PostsTable,
    image_embeddings: EmbeddingSet,
    vector_index: VectorIndex,
) -> dg.AssetCheckResult:
    train_ids, _ = read_vectors(image_embeddings.folder, uuids_of_split(posts.path, "train"))
    held = vector_index.count(search_index.version)
    return dg.AssetCheckResult(
        passed=held == len(train_ids),
        metadata={"indexed": held, "train_embeddings": len(train_ids)},
    )


@dg.asset_check(asset=recall_report, blocking=True,
                description="Gate: the new index goes live only if recall meets the target.")
def recall_meets_target(config: RecallGateConfig, recall_report: dict) -> dg.AssetCheckResult:
    recall = recall_report["mean_recall"]
    count_ok = recall_report["indexed"] == recall_report["ground_truth_corpus"]
    return dg.AssetCheckResult(
        passed=bool(recall >= config.target and count_ok),
        metadata={"mean_recall": recall, "target": config.target,
                  "indexed": recall_report["indexed"],
                  "train_embeddings": recall_report["ground_truth_corpus"]},
        description=(f"mean recall@{recall_report['k']} {recall:.4f} vs target {config.target}; "
                     f"indexed {recall_report['indexed']} vs train "
                     f"{recall_report['ground_truth_corpus']}"),
    )
