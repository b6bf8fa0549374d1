"""Command-line tasks around the pipeline: ``python -m imgsearch_pipeline.cli ensure-bucket``
creates the production profile's bucket from the environment (compose's ``minio-init``)."""

import sys

from .resources.production import production_backends
from .settings import ConfigurationError, Settings

USAGE = "usage: python -m imgsearch_pipeline.cli ensure-bucket"


def ensure_bucket() -> None:
    """Create the bucket of the production profile's object store unless it exists."""
    try:
        store = production_backends(Settings.read())["object_store"]
    except ConfigurationError as error:  # one line that names the variable, no traceback
        raise SystemExit(str(error)) from None
    created = store.ensure_bucket()
    print(f"bucket {store.bucket} {'created' if created else 'already there'}")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args != ["ensure-bucket"]:
        raise SystemExit(USAGE)
    ensure_bucket()


if __name__ == "__main__":
    main()
