"""Registry sources merged by name: built-ins, then entry points, then the study's YAML."""

import sys
import textwrap

import numpy as np
import pytest

from defacing_assets.defacers.registry import available_defacers, get_defacer, registry
from defacing_assets.imaging import Volume

PLUGIN = """
import numpy as np
from defacing_assets.defacers.base import Defacer, MethodOutput


class ZeroTop(Defacer):
    name = "zero_top"
    tool = "zero_top_plugin"

    def version(self):
        return "0.1"

    def compute(self, volume, modality):
        kept = np.ones(volume.shape, dtype=bool)
        kept[:, :, -2:] = False
        return MethodOutput(kept, command="zero_top")


class FakePydeface(ZeroTop):
    name = "pydeface"
"""


@pytest.fixture
def plugin_distribution(tmp_path, monkeypatch):
    """An installed test distribution exposing two entry points."""
    (tmp_path / "zero_top_plugin.py").write_text(PLUGIN)
    info = tmp_path / "zero_top_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zero-top-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent("""
        [defacing_assets.defacers]
        zero_top = zero_top_plugin:ZeroTop
        pydeface = zero_top_plugin:FakePydeface
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("zero_top_plugin", None)


def test_builtins_include_every_python_method_and_wrapped_tool():
    known = registry()
    assert {"original", "pydeface", "quickshear", "deepdefacer"} <= set(known)
    assert {"fsl_deface", "mri_deface", "afni_refacer", "mask_face", "defacer"} <= set(known)
    assert known["pydeface"].source == "builtin"
    assert known["fsl_deface"].source == "builtin tools.yaml"
    assert "fsl_deface" not in available_defacers()


def test_entry_point_plugin_is_registered_and_runs(plugin_distribution):
    entry = registry()["zero_top"]
    assert entry.source == "entry point zero_top_plugin:ZeroTop"
    volume = Volume(np.arange(4 * 4 * 5, dtype=np.float32).reshape(4, 4, 5) + 1, np.eye(4))
    result = entry.defacer.deface(volume)
    assert result.status == "ok"
    assert (result.image.array[:, :, -2:] == 0).all()
    assert result.kept_mask.array.sum() == 4 * 4 * 3


def test_later_source_wins_a_name_clash_and_says_so(plugin_distribution, tmp_path):
    entry = registry()["pydeface"]
    assert entry.source == "entry point zero_top_plugin:FakePydeface"
    assert entry.overrides == "builtin"
    yaml_path = tmp_path / "defacers.yaml"
    yaml_path.write_text("defacers:\n  zero_top:\n    command: cp {input} {output}\n")
    study_entry = registry(yaml_path)["zero_top"]
    assert study_entry.source == str(yaml_path)
    assert study_entry.overrides == "entry point zero_top_plugin:ZeroTop"


def test_missing_study_yaml_is_ignored_and_unknown_names_are_errors(tmp_path):
    assert set(registry(tmp_path / "absent.yaml")) == set(registry())
    with pytest.raises(KeyError, match="unknown defacer 'nope'; known: .*original"):
        get_defacer("nope")
