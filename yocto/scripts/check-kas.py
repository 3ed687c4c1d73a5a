#!/usr/bin/env python3
"""Validate the kas files against kas's JSON schema, offline, with kas's own loader.

kas (PyPI) ships its schema (kas/schema-kas.json) and validates every file it loads against it;
this loads each file the way `kas build` would (includes resolved and merged, schema checked per
file and the merged result checked again) without cloning anything, then checks what the schema
cannot: a top-level file names a machine, a distro and a target; every remote repository is
pinned to a branch, tag or commit; local layers exist. Files under yocto/kas/ that only serve as
includes (no `machine`) are checked by schema only.

Usage: check-kas.py FILE...   (run with the Python of a venv that has kas installed)
"""

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

from jsonschema.validators import validator_for
from kas import context
from kas.config import Config
from kas.configschema import CONFIGSCHEMA
from kas.includehandler import ConfigFile
from kas.kasusererror import KasUserError


def check(ctx, path, root):
    errors = []
    own = ConfigFile.load(str(path)).config  # schema check of this file alone
    if "machine" not in own:
        return errors  # an include-only file
    cfg = Config(ctx, str(path))
    missing = cfg.find_missing_repos()
    if missing:
        errors.append(f"includes from repositories kas would have to fetch: {missing}")
    merged = cfg.get_config()
    validator = validator_for(CONFIGSCHEMA)(CONFIGSCHEMA)
    for err in validator.iter_errors(merged):
        errors.append(f"merged configuration: {err.message}")
    for key in ("machine", "distro", "target"):
        if not merged.get(key):
            errors.append(f"no {key}")
    for name, repo in (merged.get("repos") or {}).items():
        repo = repo or {}
        if repo.get("url"):
            if not any(repo.get(k) for k in ("branch", "tag", "commit", "refspec")):
                errors.append(f"repo {name}: no branch, tag or commit")
        elif not repo.get("path"):
            for layer in repo.get("layers") or {"": None}:
                if not (root / layer / "conf" / "layer.conf").is_file():
                    errors.append(f"repo {name}: layer {layer or '.'} has no conf/layer.conf")
    return errors


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="kas: %(levelname)s: %(message)s")
    root = Path(__file__).resolve().parents[2]  # the repository of the kas files' local layers
    failed = 0
    with tempfile.TemporaryDirectory() as work:
        os.environ["KAS_WORK_DIR"] = work  # kas writes nothing here: no checkout, no build
        ctx = context.create_global_context(argparse.Namespace(no_color=True, update=False))
        for path in args.files:
            path = path.resolve()
            try:
                errors = check(ctx, path, root)
            except KasUserError as e:
                errors = [str(e)]
            for e in errors:
                print(f"{path}: {e}", file=sys.stderr)
            failed += bool(errors)
            if not errors:
                print(f"{path.name}: valid (kas schema)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
