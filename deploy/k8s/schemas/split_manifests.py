#!/usr/bin/env python3
"""Split a rendered overlay (`kubectl kustomize …`) for the offline validators.

    python3 deploy/k8s/schemas/split_manifests.py RENDERED.yaml OUTDIR

writes into OUTDIR:
  builtin.yaml            every object of a built-in kind, for `kubernetes-validate --strict`
  scaledobject-NAME.json  each KEDA ScaledObject, for `check-jsonschema --schemafile
                          deploy/k8s/schemas/keda-scaledobject.schema.json`
  objects.json            all objects as one JSON list, for the test's own checks

Any other keda.sh kind (TriggerAuthentication, ScaledJob, …) is refused: there is no schema here to
check it against, and kubernetes-validate would only warn about it. Needs PyYAML (a dependency of
kubernetes-validate).
"""

import json
import pathlib
import sys

import yaml


def main():
    rendered, outdir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    outdir.mkdir(parents=True, exist_ok=True)
    objects = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    builtin, scaled = [], []
    for obj in objects:
        group = obj.get("apiVersion", "").rpartition("/")[0]
        if group == "keda.sh":
            if obj.get("kind") != "ScaledObject":
                print(f"no schema for {obj.get('apiVersion')} {obj.get('kind')}", file=sys.stderr)
                return 2
            scaled.append(obj)
        else:
            builtin.append(obj)
    (outdir / "builtin.yaml").write_text(yaml.safe_dump_all(builtin, sort_keys=False))
    for obj in scaled:
        name = obj.get("metadata", {}).get("name", "unnamed")
        (outdir / f"scaledobject-{name}.json").write_text(json.dumps(obj, indent=1))
    (outdir / "objects.json").write_text(json.dumps(objects))
    print(f"{len(builtin)} built-in objects, {len(scaled)} ScaledObjects")
    return 0


if __name__ == "__main__":
    sys.exit(main())
