"""Asset checks: the invariants each stage promises, and the recall gate before publishing.

Blocking checks stop the rest of the run when they fail: nothing downstream of bad data is
built, and ``live_index`` (the publish step) runs only after ``recall_meets_target`` passes,
so a failed gate leaves the previous index live.
"""

from collections import Counter
from pathlib import PurePosixPath

import dagster as dg

from .artifacts import EmbeddingSet, ImageObjects, IndexBuild, PostsTable
from .assets.embeddings import image_embeddings
from .assets.evaluation import recall_report
from .assets.images import image_objects
from .assets.index import search_index
from .assets.posts import posts
from .core.integrity import IntegrityError
from .core.report import RecallReport
from .core.vectors import embedded_uuids, embedding_parts, part_stats
from .resources.object_store import ObjectStore
from .resources.vector_index import VectorIndex

NORM_TOLERANCE = 1e-3


@dg.asset_check(asset=posts, blocking=True, description="No uuid is in both train and test.")
def split_is_disjoint(posts: PostsTable) -> dg.AssetCheckResult:
    table = posts.read(["uuid", "split"])
    splits: dict[str, set[str]] = {}
    for u, split in zip(table.column("uuid").to_pylist(), table.column("split").to_pylist(),
                        strict=True):
        splits.setdefault(u, set()).add(split)
    overlap = sum(1 for s in splits.values() if len(s) > 1)
    duplicates = table.num_rows - len(splits)
    unknown = sum(1 for s in splits.values() if not s <= {"train", "test"})
    return dg.AssetCheckResult(
        passed=overlap == 0 and duplicates == 0 and unknown == 0,
        metadata={"overlap": overlap, "duplicate_uuids": duplicates, "unknown_split": unknown},
    )


def object_counts(post_keys: list[str], stored_keys: list[str]) -> dict[str, int]:
    """Posts without their object, uuids stored under several keys, objects of no post."""
    stored = set(stored_keys)
    per_uuid = Counter(PurePosixPath(k).stem for k in stored)
    post_uuids = {PurePosixPath(k).stem for k in post_keys}
    return {
        "posts": len(post_keys),
        "objects": len(stored),
        "missing": sum(1 for k in post_keys if k not in stored),
        "several_objects": sum(1 for u in post_uuids if per_uuid.get(u, 0) > 1),
        "orphans": sum(1 for u in per_uuid if u not in post_uuids),
    }


@dg.asset_check(asset=image_objects, blocking=True, additional_ins={"posts": dg.AssetIn("posts")},
                description="Every post has exactly one stored image object (keys counted).")
def one_object_per_post(
    image_objects: ImageObjects, posts: PostsTable, object_store: ObjectStore
) -> dg.AssetCheckResult:
    keys = posts.read(["key"]).column("key").to_pylist()
    counts = object_counts(keys, list(object_store.iter_keys("images/")))
    # Orphans (objects of posts whose shard went away) are reported, not an error.
    return dg.AssetCheckResult(
        passed=counts["missing"] == 0 and counts["several_objects"] == 0, metadata=counts)


def vector_stats(folder: str, dim: int) -> dict:
    """Rows, dims, finiteness and worst norm error of the verified parts (``part_stats``)."""
    rows, finite, worst, dims = 0, True, 0.0, set()
    for stats in part_stats(embedding_parts(folder)[0]):
        rows += stats["rows"]
        dims.add(stats["dim"])
        finite = finite and stats["finite"]
        worst = max(worst, stats["max_norm_error"])
    return {"rows": rows, "dims": sorted(dims), "expected_dim": dim, "finite": finite,
            "max_norm_error": worst,
            "passed": rows > 0 and finite and worst < NORM_TOLERANCE and dims == {dim}}


@dg.asset_check(asset=image_embeddings, blocking=True,
                description="Vectors are finite, unit length, and all of one size (the "
                            "model's output, as its parts were written).")
def embeddings_are_unit_vectors(image_embeddings: EmbeddingSet) -> dg.AssetCheckResult:
    stats = vector_stats(image_embeddings.folder, image_embeddings.dim)
    passed = stats.pop("passed")
    return dg.AssetCheckResult(passed=passed, metadata={
        **stats, "dims": dg.MetadataValue.json(stats["dims"]),
        "max_norm_error": dg.MetadataValue.float(float(f"{stats['max_norm_error']:.2e}"))})


@dg.asset_check(asset=image_embeddings, additional_ins={"posts": dg.AssetIn("posts")},
                description="Every post has an embedding (warns: images that failed to load "
                            "are left out of the index and tried again next run).")
def embeddings_cover_posts(image_embeddings: EmbeddingSet, posts: PostsTable) -> dg.AssetCheckResult:
    wanted = set(posts.read(["uuid"]).column("uuid").to_pylist())
    missing = len(wanted - embedded_uuids(image_embeddings.folder))
    return dg.AssetCheckResult(passed=missing == 0, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"posts": len(wanted), "missing": missing})


@dg.asset_check(
    asset=search_index,
    blocking=True,
    additional_ins={"image_embeddings": dg.AssetIn("image_embeddings")},
    description="The backend holds exactly the train embeddings.",
)
def index_count_matches_train(
    search_index: IndexBuild, image_embeddings: EmbeddingSet, vector_index: VectorIndex
) -> dg.AssetCheckResult:
    held = vector_index.stored_count(search_index.version)
    return dg.AssetCheckResult(
        passed=held == image_embeddings.train,
        metadata={"indexed": held, "train_embeddings": image_embeddings.train,
                  "version": search_index.version},
    )


def gate_verdict(report: RecallReport, indexed: int, live: str | None) -> tuple[bool, str]:
    """Whether a new version may go live, and a sentence that says why (for the UI and logs).

    The version is judged at the search depth its evaluation chose, against the target the
    evaluation was given (``recall_report``'s ``target``).
    """
    recall, k, train = report.mean_recall, report.k, report.ground_truth_corpus
    target, depth = report.target, report.num_candidates
    problems = []
    if not recall >= target:  # also catches NaN (no queries)
        problems.append(f"mean recall@{k} {recall:.4f} at search depth {depth} is below the "
                        f"target {target}; {report.depth_verdict}")
    if indexed != train:
        problems.append(f"the index holds {indexed} documents but there are {train} train embeddings")
    if not problems:
        return True, (f"publish {report.index_version}: mean recall@{k} {recall:.4f} >= "
                      f"target {target} at search depth {depth}; {indexed} documents = train "
                      "embeddings")
    return False, (f"NOT PUBLISHED: {'; '.join(problems)}. Index version {report.index_version} "
                   f"stays unpublished; the live index stays {live or '(none)'}.")


@dg.asset_check(asset=recall_report, blocking=True,
                description="Gate: the new index goes live only if recall at its chosen search "
                            "depth meets the target and it holds every train embedding.")
def recall_meets_target(
    context: dg.AssetCheckExecutionContext,
    recall_report: RecallReport,
    vector_index: VectorIndex,
) -> dg.AssetCheckResult:
    indexed = vector_index.stored_count(recall_report.index_version)
    try:
        live = vector_index.live_version()
    except IntegrityError as error:  # publishing replaces a damaged pointer
        live = f"(unreadable: {error})"
    passed, why = gate_verdict(recall_report, indexed, live)
    (context.log.info if passed else context.log.error)(f"recall gate: {why}")
    return dg.AssetCheckResult(
        passed=passed,
        description=why,
        metadata={"mean_recall": dg.MetadataValue.float(round(float(recall_report.mean_recall), 4)),
                  "target": dg.MetadataValue.float(float(recall_report.target)),
                  "num_candidates": dg.MetadataValue.int(int(recall_report.num_candidates)),
                  "indexed": indexed,
                  "train_embeddings": recall_report.ground_truth_corpus,
                  "index_version": recall_report.index_version,
                  "live_version": str(live)},
    )
