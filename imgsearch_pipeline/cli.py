"""Command-line tasks around the pipeline:

- ``python -m imgsearch_pipeline.cli ensure-bucket`` creates the production profile's bucket
  from the environment (compose's ``minio-init``);
- ``python -m imgsearch_pipeline.cli settings-docs`` rewrites the docs' variable tables from
  the declarations in ``settings.py``.
"""

import sys
from pathlib import Path

from .resources.production import production_backends
from .settings import GROUPS, ConfigurationError, Settings, with_tables

USAGE = "usage: python -m imgsearch_pipeline.cli ensure-bucket | settings-docs"


def ensure_bucket() -> None:
    """Create the bucket of the production profile's object store unless it exists."""
    try:
        store = production_backends(Settings.read())["object_store"]
    except ConfigurationError as error:  # one line that names the variable, no traceback
        raise SystemExit(str(error)) from None
    created = store.ensure_bucket()
    print(f"bucket {store.bucket} {'created' if created else 'already there'}")


def settings_docs(root: Path = Path(__file__).parent.parent) -> None:
    """Write each group's table between its ``<!-- settings:GROUP -->`` markers."""
    for doc in sorted(set(GROUPS.values())):
        path = root / doc
        path.write_text(with_tables(path.read_text()))
        print(f"{doc}: settings tables written")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    commands = {"ensure-bucket": ensure_bucket, "settings-docs": settings_docs}
    if len(args) != 1 or args[0] not in commands:
        raise SystemExit(USAGE)
    commands[args[0]]()


if __name__ == "__main__":
    main()
