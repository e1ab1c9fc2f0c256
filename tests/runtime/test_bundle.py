"""Bundle manifest: round trip, schema errors, checksums, no code execution on load."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lulc.runtime.core.bundle import MANIFEST, Bundle, sha256sum
from lulc.runtime.core.errors import BundleError


def test_round_trip_keeps_every_field(bundle_copy):
    original = Bundle.load(bundle_copy)
    original.save()
    again = Bundle.load(bundle_copy)
    assert again.manifest == original.manifest
    m = again.manifest
    assert m.task == "segmentation"
    assert m.input.bands == ["B02", "B03", "B04", "B08"]
    assert [c.name for c in m.classes] == ["crop", "grass", "water"]
    assert len(m.normalization.mean) == len(m.input.bands)
    assert {"keras", "samples", "onnx"} <= set(m.artifacts)
    assert m.artifacts["onnx"].parity["max_abs_diff"] <= 1e-4
    assert m.provenance["split"]["method"] == "spatial-blocks"


def _edit(bundle_dir, change):
    raw = json.loads((bundle_dir / MANIFEST).read_text())
    change(raw)
    (bundle_dir / MANIFEST).write_text(json.dumps(raw))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(schema_version=99), "schema version 99"),
        (lambda r: r.update(surprise=1), "surprise"),
        (lambda r: r["normalization"]["mean"].pop(), "normalization.mean has 3 values, expected 4"),
        (lambda r: r["classes"][0].update(id=5), "class ids"),
        (lambda r: r["tile"].update(overlap=500), "overlap"),
        (lambda r: r["normalization"]["std"].__setitem__(0, 0.0), r"std\[0\] is 0.0"),
        (lambda r: r["normalization"]["mean"].__setitem__(2, float("inf")), r"mean\[2\] is inf"),
    ],
)
def test_schema_errors_are_clear(bundle_copy, change, message):
    _edit(bundle_copy, change)
    with pytest.raises(BundleError, match=message):
        Bundle.load(bundle_copy)


def test_missing_manifest_and_folder(tmp_path):
    with pytest.raises(BundleError, match="no bundle.json"):
        Bundle.load(tmp_path)
    with pytest.raises(BundleError, match="not found"):
        Bundle.load(tmp_path / "nope")


def test_missing_or_altered_artifact_is_refused(bundle_copy):
    bundle = Bundle.load(bundle_copy)
    onnx = bundle.artifact_path("onnx")
    onnx.write_bytes(onnx.read_bytes()[:-10])
    with pytest.raises(BundleError, match="checksum"):
        bundle.artifact_path("onnx")
    onnx.unlink()
    with pytest.raises(BundleError, match="missing"):
        bundle.artifact_path("onnx")
    del bundle.manifest.artifacts["onnx"]
    with pytest.raises(BundleError, match="lulc export --target onnx"):
        bundle.artifact_path("onnx")


def test_samples_load_without_pickle(bundle_copy):
    bundle = Bundle.load(bundle_copy)
    x = bundle.load_samples()
    assert x.dtype == np.float32 and x.ndim == 4 and x.shape[-1] == 4
    # an object array would need pickle: loading refuses with one line rather than execute it
    path = bundle.artifact_path("samples")
    np.savez(path, x=np.array([object()], dtype=object))
    bundle.manifest.artifacts["samples"].sha256 = sha256sum(path)
    with pytest.raises(BundleError, match="pickle") as err:
        bundle.load_samples()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("rel", ["model.onnx", "sub/model.onnx", "./model.onnx"])
def test_inside_keeps_relative_paths(bundle_copy, rel):
    assert Bundle.load(bundle_copy).inside(rel) == bundle_copy / rel


@pytest.mark.parametrize("rel", ["../model.onnx", "sub/../../x", "/etc/passwd", ""])
def test_inside_refuses_paths_out_of_the_bundle(bundle_copy, rel):
    with pytest.raises(BundleError, match="not inside the bundle folder"):
        Bundle.load(bundle_copy).inside(rel)


def test_inside_follows_links(bundle_copy, tmp_path):
    (bundle_copy / "in.onnx").symlink_to(bundle_copy / "model.onnx")
    (bundle_copy / "out.onnx").symlink_to(tmp_path)
    bundle = Bundle.load(bundle_copy)
    assert bundle.inside("in.onnx") == bundle_copy / "in.onnx"
    with pytest.raises(BundleError, match="link leading outside"):
        bundle.inside("out.onnx")
