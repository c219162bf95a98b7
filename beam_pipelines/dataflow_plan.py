"""A Dataflow job built offline by Beam's dry run, written out for review before anyone submits it.

- ``pipeline.pb``: the Runner API pipeline proto, exactly what Dataflow would receive;
- ``job.json``: the Dataflow job request (name, type, labels);
- ``plan.txt``: a readable summary: the options, then every transform with its URN and the
  coders of the PCollections it produces.
"""

from __future__ import annotations

import os


def plan_summary(pipeline_proto, options: dict) -> str:
    components = pipeline_proto.components
    lines = ["options:"] + [f"  {key} = {value}" for key, value in sorted(options.items())]
    lines.append("transforms:")
    for transform_id in sorted(components.transforms, key=lambda t: components.transforms[t].unique_name):
        transform = components.transforms[transform_id]
        outputs = [components.pcollections[p] for p in transform.outputs.values()]
        coders = ", ".join(_coder_name(components, o.coder_id) for o in outputs)
        lines.append(
            f"  {transform.unique_name}  [{transform.spec.urn or 'composite'}]" + (f"  -> {coders}" if coders else "")
        )
    lines.append("environments:")
    for environment_id, environment in sorted(components.environments.items()):
        lines.append(f"  {environment_id}: {environment.urn}")
    return "\n".join(lines) + "\n"


def _coder_name(components, coder_id: str) -> str:
    coder = components.coders[coder_id]
    inner = [_coder_name(components, c) for c in coder.component_coder_ids]
    name = coder.spec.urn.rsplit(":", 2)[-2] if coder.spec.urn.count(":") >= 2 else coder.spec.urn
    return f"{name}<{', '.join(inner)}>" if inner else name


def write_plan(result, out_dir: str) -> list[str]:
    """Writes the dry run's job; returns the paths written."""
    job = result.job
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, name) for name in ("pipeline.pb", "job.json", "plan.txt")]
    with open(paths[0], "wb") as handle:
        handle.write(job.proto_pipeline.SerializeToString())
    with open(paths[1], "w") as handle:
        handle.write(job.json())
    options = job.options.get_all_options(drop_default=True)
    with open(paths[2], "w") as handle:
        handle.write(plan_summary(job.proto_pipeline, options))
    return paths
