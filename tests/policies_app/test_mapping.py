"""The conda → PyPI name mapping: the file formats conda-forge's tooling publishes, loading
(replacing what the same file loaded before), the command, the task, the admin and the API."""

from __future__ import annotations

import json
import shutil
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.urls import reverse

from policies_app import services, tasks
from policies_app.mapping import ECOSYSTEM, MappingError, NameMap, parse_mapping, read_mapping
from policies_app.models import NameMapping

FIXTURES = Path(__file__).parent.parent / "fixtures" / "name_mapping"
YAML_FILE = FIXTURES / "name_mapping.yaml"
COMPRESSED_FILE = FIXTURES / "compressed_mapping.json"

YAML_PAIRS = {
    ("pytorch", "torch"),
    ("pyyaml", "pyyaml"),
    ("requests", "requests"),
    ("scikit-learn", "scikit-learn"),
    ("typing_extensions", "typing-extensions"),
}


def pairs(entries) -> set[tuple[str, str]]:
    assert {e.ecosystem for e in entries} <= {ECOSYSTEM}
    return {(e.conda_name, e.name) for e in entries}


def parse_json(document, name: str = "m.json"):
    return parse_mapping(json.dumps(document).encode(), name=name)


# --- Formats -----------------------------------------------------------------------------------


def test_reads_cf_graph_countyfair_name_mapping_yaml():
    parsed = read_mapping(YAML_FILE)

    assert pairs(parsed.entries) == YAML_PAIRS  # PyPI names normalized: PyYAML -> pyyaml
    assert parsed.errors == []


def test_reads_the_same_list_as_json(tmp_path):
    import yaml

    path = tmp_path / "name_mapping.json"
    path.write_text(json.dumps(yaml.safe_load(YAML_FILE.read_text())))

    assert pairs(read_mapping(path).entries) == YAML_PAIRS


def test_reads_parselmouth_compressed_mapping_skipping_packages_without_pypi_name():
    parsed = read_mapping(COMPRESSED_FILE)

    assert pairs(parsed.entries) == {
        ("numpy", "numpy"),
        ("py-opencv", "opencv-python"),
        ("python-graphviz", "graphviz"),
        ("pytorch", "torch"),
        ("requests", "requests"),
        ("ruamel.yaml", "ruamel-yaml"),
    }
    assert parsed.errors == []


def test_reads_several_pypi_names_of_one_conda_package():
    parsed = parse_json({"libopencv": ["opencv-python", "opencv-python-headless"]})

    assert pairs(parsed.entries) == {
        ("libopencv", "opencv-python"),
        ("libopencv", "opencv-python-headless"),
    }


def test_reads_the_grayskull_mapping_keyed_by_pypi_name():
    parsed = parse_json(
        {
            "torch": {
                "conda_forge": "pytorch",
                "conda_name": "pytorch",
                "import_name": "torch",
                "mapping_source": "static",
                "pypi_name": "torch",
            },
            "PyYAML": {"conda_name": "pyyaml", "import_name": "yaml"},
        }
    )

    assert pairs(parsed.entries) == {("pytorch", "torch"), ("pyyaml", "pyyaml")}


def test_bad_entries_are_named_and_the_others_still_load():
    parsed = parse_json(
        [
            {"conda_name": "requests", "pypi_name": "requests"},
            {"import_name": "x", "pypi_name": "x"},
            {"conda_name": "bad-pypi", "pypi_name": "not a name!"},
            {"conda_name": "no-pypi-key"},
            "numpy",
            {"conda_name": "Has Space", "pypi_name": "ok"},
            {"conda_name": "twelve", "pypi_name": 12},
        ],
        name="name_mapping.json",
    )

    assert pairs(parsed.entries) == {("requests", "requests")}
    assert parsed.errors == [
        "name_mapping.json, entry 2: conda_name must be a package name, not None",
        "name_mapping.json, entry 3: 'not a name!' is not a PyPI project name",
        "name_mapping.json, entry 4: pypi_name is missing (conda_name 'no-pypi-key')",
        "name_mapping.json, entry 5: expected an object with conda_name and pypi_name, "
        "found 'numpy'",
        "name_mapping.json, entry 6: 'Has Space' is not a conda package name",
        "name_mapping.json, entry 7: the PyPI name must be a string, a list of strings or "
        "null, not 12",
    ]
    assert parsed.failed == {"bad-pypi", "no-pypi-key", "has space", "twelve"}


def test_bad_values_of_the_compressed_mapping_are_named_by_key():
    parsed = parse_json({"numpy": "numpy", "odd": {"x": 1}, "weird": 3.5}, name="c.json")

    assert pairs(parsed.entries) == {("numpy", "numpy")}
    assert parsed.errors == [
        "c.json, entry 'odd': conda_name must be a package name, not None",
        "c.json, entry 'weird': the PyPI name must be a string, a list of strings or null, not 3.5",
    ]


@pytest.mark.parametrize(
    ("data", "yaml", "message"),
    [
        (b"{not json", False, "m.json: not valid JSON"),
        (b"- conda_name: [unclosed", True, "m.json: not valid YAML"),
        (b"42", False, "not a mapping file: expected a list of entries"),
        (b"[]", False, "holds no entries; the stored mapping is left as it was"),
        (b'[{"pypi_name": "x"}]', False, "no entry could be read; the stored mapping is left"),
    ],
)
def test_a_file_that_cannot_be_read_at_all_is_an_error(data, yaml, message):
    with pytest.raises(MappingError, match=message.replace("(", r"\(")):
        parse_mapping(data, name="m.json", yaml=yaml)


def test_a_missing_file_is_an_error(tmp_path):
    with pytest.raises(MappingError, match="cannot read the file"):
        read_mapping(tmp_path / "missing.yaml")


# --- Loading -----------------------------------------------------------------------------------


@pytest.fixture
def sent(monkeypatch) -> list[dict]:
    """The enforcement tasks queued, by their keyword arguments (no broker runs)."""
    queued: list[dict] = []
    monkeypatch.setattr(tasks.enforce, "delay", lambda **kwargs: queued.append(kwargs))
    return queued


def stored(source: Path | None = None) -> set[tuple[str, str]]:
    rows = NameMapping.objects.all()
    if source is not None:
        rows = rows.filter(source=str(source))
    return set(rows.values_list("conda_name", "name"))


def write_yaml(path: Path, *entries: tuple[str, str]) -> Path:
    path.write_text(
        "".join(
            f"- conda_name: {c}\n  pypi_name: {p}\n  mapping_source: test\n" for c, p in entries
        )
    )
    return path


@pytest.mark.django_db
def test_load_stores_the_file_and_queues_enforcement(sent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        result = services.name_mapping_load(path=YAML_FILE)

    assert str(result) == "5 created, 0 deleted, 0 unchanged, 0 errors"
    assert stored(YAML_FILE) == YAML_PAIRS
    assert set(NameMapping.objects.values_list("ecosystem", flat=True)) == {"PyPI"}
    assert sent == [
        {
            "trigger": f"name mapping loaded from {YAML_FILE} "
            "(5 created, 0 deleted, 0 unchanged, 0 errors)",
            "policy_id": None,
            "mirror_ids": None,
        }
    ]


@pytest.mark.django_db
def test_loading_the_same_file_again_changes_nothing(sent, django_capture_on_commit_callbacks):
    services.name_mapping_load(path=YAML_FILE)

    with django_capture_on_commit_callbacks(execute=True):
        result = services.name_mapping_load(path=YAML_FILE)

    assert str(result) == "0 created, 0 deleted, 5 unchanged, 0 errors"
    assert sent == []


@pytest.mark.django_db
def test_a_new_version_of_the_file_replaces_only_what_that_file_loaded(tmp_path, sent):
    path = write_yaml(tmp_path / "name_mapping.yaml", ("pytorch", "torch"), ("numpy", "numpy"))
    services.name_mapping_load(path=path)
    other = services.name_mapping_load(path=COMPRESSED_FILE)
    write_yaml(path, ("numpy", "numpy"), ("scipy", "scipy"))

    result = services.name_mapping_load(path=path)

    # The pairs both files list stay the first file's: the second counts them unchanged.
    assert (other.created, other.unchanged) == (4, 2)
    assert (result.created, result.deleted, result.unchanged) == (1, 1, 1)
    assert stored(path) == {("numpy", "numpy"), ("scipy", "scipy")}
    assert stored(COMPRESSED_FILE) == {
        ("py-opencv", "opencv-python"),
        ("python-graphviz", "graphviz"),
        ("requests", "requests"),
        ("ruamel.yaml", "ruamel-yaml"),
    }


@pytest.mark.django_db
def test_a_bad_entry_keeps_what_was_stored_for_its_package(tmp_path):
    path = write_yaml(tmp_path / "m.yaml", ("pytorch", "torch"), ("numpy", "numpy"))
    services.name_mapping_load(path=path)
    path.write_text(
        "- conda_name: pytorch\n  pypi_name: 'not valid!'\n"
        "- conda_name: numpy\n  pypi_name: numpy\n"
    )

    result = services.name_mapping_load(path=path)

    assert result.errors == [f"{path}, entry 1: 'not valid!' is not a PyPI project name"]
    assert (result.created, result.deleted) == (0, 0)
    assert stored(path) == {("pytorch", "torch"), ("numpy", "numpy")}


@pytest.mark.django_db
def test_an_unreadable_file_changes_nothing(tmp_path, sent, django_capture_on_commit_callbacks):
    path = tmp_path / "name_mapping.json"
    shutil.copy(COMPRESSED_FILE, path)
    services.name_mapping_load(path=path)
    path.write_text('{"numpy": "numpy",')  # a download cut short

    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(MappingError, match="not valid JSON"):
            services.name_mapping_load(path=path)

    assert len(stored(path)) == 6
    assert sent == []


# --- Command and task --------------------------------------------------------------------------


@pytest.mark.django_db
def test_command_loads_a_file_and_reports_bad_entries(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('{"numpy": "numpy", "odd": 5}')
    out, err = StringIO(), StringIO()

    call_command("load_name_mapping", str(path), stdout=out, stderr=err)

    assert out.getvalue().strip() == f"{path}: 1 created, 0 deleted, 0 unchanged, 1 error"
    assert "entry 'odd': the PyPI name must be a string" in err.getvalue()
    assert stored() == {("numpy", "numpy")}


@pytest.mark.django_db
def test_command_fails_on_a_file_it_cannot_read(tmp_path):
    with pytest.raises(CommandError, match="cannot read the file"):
        call_command("load_name_mapping", str(tmp_path / "nope.yaml"), stdout=StringIO())


@pytest.mark.django_db
def test_task_loads_the_configured_file(settings, tmp_path):
    settings.PSM_NAME_MAPPING_FILE = ""
    assert tasks.load_name_mapping() is None

    settings.PSM_NAME_MAPPING_FILE = str(YAML_FILE)
    assert tasks.load_name_mapping() == "5 created, 0 deleted, 0 unchanged, 0 errors"

    settings.PSM_NAME_MAPPING_FILE = str(tmp_path / "gone.yaml")
    assert tasks.load_name_mapping().startswith("error: ")
    assert stored() == YAML_PAIRS


def test_the_task_is_scheduled_like_the_advisory_load():
    scheduled = {entry["task"]: entry for entry in django_settings.CELERY_BEAT_SCHEDULE.values()}

    assert scheduled["policies.load_name_mapping"]["schedule"] == 3600.0
    assert tasks.load_name_mapping.name == "policies.load_name_mapping"


# --- Admin and API -----------------------------------------------------------------------------


@pytest.fixture
def loaded(db):
    services.name_mapping_load(path=YAML_FILE)


def test_admin_lists_and_searches_the_mapping_read_only(client, make_user, loaded):
    client.force_login(make_user(*[f"policies_app.{p}_namemapping" for p in ("view", "change")]))
    url = reverse("admin:policies_app_namemapping_changelist")

    def conda_names(**params) -> list[str]:
        response = client.get(url, params)
        assert response.status_code == 200
        return [row.conda_name for row in response.context["cl"].result_list]

    assert conda_names() == sorted(c for c, _ in YAML_PAIRS)
    assert conda_names(q="torch") == ["pytorch"]
    assert conda_names(q="typing-extensions") == ["typing_extensions"]
    assert client.get(reverse("admin:policies_app_namemapping_add")).status_code == 403
    row = NameMapping.objects.get(conda_name="pytorch")
    page = client.get(reverse("admin:policies_app_namemapping_change", args=[row.pk]))
    assert not page.context["has_change_permission"]


def test_api_filters_the_mapping_by_conda_name(api_client, make_user, loaded):
    api_client.force_authenticate(make_user("policies_app.view_namemapping"))

    everything = api_client.get("/api/name-mappings/").json()
    torch = api_client.get("/api/name-mappings/", {"conda_name": "PyTorch"}).json()
    by_pypi = api_client.get("/api/name-mappings/", {"name": "PyYAML"}).json()

    assert everything["count"] == 5
    [row] = torch["results"]
    assert (row["conda_name"], row["ecosystem"], row["name"]) == ("pytorch", "PyPI", "torch")
    assert row["source"] == str(YAML_FILE)
    assert [r["conda_name"] for r in by_pypi["results"]] == ["pyyaml"]


def test_api_mapping_is_read_only_and_needs_its_permission(api_client, make_user, loaded):
    api_client.force_authenticate(make_user("policies_app.view_vulnerability"))
    assert api_client.get("/api/name-mappings/").status_code == 403

    api_client.force_authenticate(
        make_user("policies_app.view_namemapping", "policies_app.add_namemapping")
    )
    assert api_client.post("/api/name-mappings/", {}, format="json").status_code == 405


def test_cve_readers_may_read_the_mapping(api_client, make_user, loaded):
    from django.contrib.auth.models import Group

    user = make_user()
    user.groups.add(Group.objects.get(name="CVE: Read"))
    api_client.force_authenticate(user)

    assert api_client.get("/api/name-mappings/").status_code == 200


def test_name_map_is_a_plain_value():
    assert NameMap("numpy", "PyPI", "numpy") == NameMap("numpy", "PyPI", "numpy")
