"""Mirror filters of standard Python mirrors."""

from __future__ import annotations

import pytest

from channels_app.formats.base import OptionsError
from channels_app.formats.pypi_filters import PyFile, clean, decide, project_names


def f(project, version, filename, **document):
    return PyFile(f"{project}/{filename}", project, version, filename, document)


FILES = [
    f("requests", "2.30.0", "requests-2.30.0-py3-none-any.whl", size=100),
    f("requests", "2.31.0", "requests-2.31.0-py3-none-any.whl", size=100),
    f("requests", "2.31.0", "requests-2.31.0.tar.gz", size=900),
    f("requests", "2.32.0rc1", "requests-2.32.0rc1-py3-none-any.whl"),
    f("numpy", "2.0.0", "numpy-2.0.0-cp312-cp312-manylinux_2_17_x86_64.whl"),
    f("numpy", "2.0.0", "numpy-2.0.0-cp311-cp311-win_amd64.whl"),
    f("numpy", "2.0.0", "numpy-2.0.0-cp39-abi3-macosx_11_0_arm64.whl"),
    f(
        "old",
        "1.0",
        "old-1.0-py3-none-any.whl",
        yanked="broken",
        **{"upload-time": "2019-01-01T00:00:00Z"},
    ),
]


def excluded(options):
    return {k.split("/", 1)[1]: r for k, r in decide(clean(options), FILES).items() if r}


def test_no_filters_keep_everything():
    assert excluded({}) == {}


def test_project_list_with_specifiers():
    assert clean({"projects": ["Zope.Interface", "requests>=2.31,<3"]}) == {
        "projects": ["requests <3,>=2.31", "zope-interface"]
    }
    assert project_names(clean({"projects": ["Requests >=2.31", "numpy"]})) == ["numpy", "requests"]
    out = excluded({"projects": ["requests >=2.31"]})
    assert out["requests-2.30.0-py3-none-any.whl"] == "not in the project list"
    assert out["old-1.0-py3-none-any.whl"] == "not in the project list"
    assert "requests-2.31.0.tar.gz" not in out


def test_block_list_types_prereleases_yanked_size_and_dates():
    assert excluded({"exclude": ["requests <2.31"]}) == {
        "requests-2.30.0-py3-none-any.whl": "excluded by the block list"
    }
    assert excluded({"package_types": ["wheel"]}) == {
        "requests-2.31.0.tar.gz": "package type sdist not mirrored"
    }
    assert excluded({"prereleases": False}) == {
        "requests-2.32.0rc1-py3-none-any.whl": "pre-release"
    }
    assert excluded({"yanked": False}) == {"old-1.0-py3-none-any.whl": "yanked"}
    assert excluded({"max_size": 500}) == {"requests-2.31.0.tar.gz": "larger than 500 bytes"}
    assert excluded({"uploaded_after": "2020-01-01"}) == {
        "old-1.0-py3-none-any.whl": "uploaded outside the date window"
    }


def test_wheel_platforms_and_python_versions():
    out = excluded({"platforms": ["manylinux*_x86_64"]})
    assert set(out) == {
        "numpy-2.0.0-cp311-cp311-win_amd64.whl",
        "numpy-2.0.0-cp39-abi3-macosx_11_0_arm64.whl",
    }
    out = excluded({"python_versions": ["3.12"]})
    assert out == {"numpy-2.0.0-cp311-cp311-win_amd64.whl": "wheel Python version not mirrored"}


def test_latest_n_versions_after_the_other_filters():
    out = excluded({"latest": 1, "prereleases": False})
    assert out["requests-2.30.0-py3-none-any.whl"] == "not among the latest 1 versions"
    assert out["requests-2.32.0rc1-py3-none-any.whl"] == "pre-release"
    assert "requests-2.31.0.tar.gz" not in out


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"colour": 1}, "unknown Python mirror options: colour"),
        ({"projects": ["requests >>2"]}, r"is not 'name \[specifiers\]'"),
        ({"projects": "requests"}, "must be a list"),
        ({"package_types": ["egg"]}, "package_types"),
        ({"python_versions": ["three"]}, "is not X.Y"),
        ({"latest": 0}, "positive whole number"),
        ({"uploaded_after": "yesterday"}, "YYYY-MM-DD"),
        ({"prereleases": "no"}, "true or false"),
    ],
)
def test_bad_filters_are_refused_with_the_reason(options, message):
    with pytest.raises(OptionsError, match=message):
        clean(options)
