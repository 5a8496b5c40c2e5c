"""The spec: one pydantic model per method, told apart by ``method``; no torch to load one."""

import subprocess
import sys

import pytest
import yaml

from synthscene.spec import MosaicDatasetSpec, SpecError, Text2LabelsDatasetSpec, load_spec, validate_spec

BASE = {"name": "s", "num_samples": 2, "classes": [{"name": "ball"}, {"name": "leaf"}]}


def test_method_chooses_the_model_and_defaults_to_text2labels():
    assert isinstance(validate_spec(BASE), Text2LabelsDatasetSpec)
    spec = validate_spec({**BASE, "method": "mosaic", "mosaic": {"regions": 4}})
    assert isinstance(spec, MosaicDatasetSpec) and spec.mosaic.grid == (2, 2)
    assert not hasattr(spec, "text2labels") and not hasattr(validate_spec(BASE), "mosaic")


def test_errors_name_the_field_and_what_to_change(tmp_path):
    with pytest.raises(SpecError, match="unknown method 'repaint'"):
        validate_spec({**BASE, "method": "repaint"})
    # an older spec file carried both sections
    with pytest.raises(SpecError, match="section 'mosaic:' belongs to method 'mosaic'.*remove the section"):
        validate_spec({**BASE, "mosaic": {"regions": 4}})
    with pytest.raises(SpecError, match=r"mosaic: .*grid \(0, 2\)"):
        validate_spec({**BASE, "method": "mosaic", "mosaic": {"grid": [0, 2]}})
    with pytest.raises(SpecError, match="objects_per_prompt"):
        validate_spec({**BASE, "method": "mosaic", "objects_per_prompt": [1, 2]})
    path = tmp_path / "spec.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)


def test_the_examples_load_and_round_trip(tmp_path):
    for name in ("shapes-text2labels", "shapes-mosaic", "shapes-grounding", "shapes-restyle",
                 "shapes-mmdit-text2labels", "shapes-mmdit-mosaic"):
        spec = load_spec(f"examples/{name}.yaml")
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
        assert load_spec(path) == spec


def test_loading_a_spec_imports_neither_torch_nor_diffusers():
    code = ("import sys; from synthscene.spec import load_spec; load_spec('examples/shapes-mosaic.yaml'); "
            "load_spec('examples/shapes-text2labels.yaml'); load_spec('examples/shapes-grounding.yaml'); load_spec('examples/shapes-restyle.yaml'); "
            "load_spec('examples/shapes-mmdit-text2labels.yaml'); load_spec('examples/shapes-mmdit-mosaic.yaml'); print([m for m in ('torch', 'diffusers') if m in sys.modules])")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_planning_imports_neither_diffusers_nor_the_capture_code():
    """A Ray driver plans and checks a run: it must not pay for the workers' imports."""
    code = ("import sys; from synthscene.spec import load_spec; from synthscene.methods import method_module\n"
            "for name in ('shapes-text2labels', 'shapes-mosaic'):\n"
            "    spec = load_spec(f'examples/{name}.yaml'); method = method_module(spec.method)\n"
            "    method.check(spec, method.plan(spec))\n"
            "print([m for m in ('diffusers', 'synthscene.capture.processors') if m in sys.modules])")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
