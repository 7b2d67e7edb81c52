"""load_project reads profiles.yml once; its values reach only the modules that resolve them, never a repr."""

from pathlib import Path

from dbtflow.dbt._project import load_project

PASSWORD = "hunter2-in-profiles"  # pragma: allowlist secret


def _project(tmp_path: Path) -> Path:
    (tmp_path / "dbt_project.yml").write_text("name: p\nprofile: p\n")
    (tmp_path / "profiles.yml").write_text(
        "config:\n  send_anonymous_usage_stats: false\n"
        "p:\n  target: dev\n  outputs:\n"
        f"    dev: {{type: postgres, password: {PASSWORD}, threads: 3}}\n"
        "    prod: {type: snowflake}\n"
    )
    return tmp_path


def test_a_targets_mapping_is_read_once_and_handed_out_as_a_copy(tmp_path):
    project = load_project(_project(tmp_path))
    (tmp_path / "profiles.yml").unlink()  # nothing reads the file again
    assert project.targets == ("dev", "prod") and project.default_target == "dev"
    dev = project.output("dev")
    assert dev["threads"] == 3 and project.output("prod") == {"type": "snowflake"}
    dev["threads"] = 99
    assert project.output("dev")["threads"] == 3
    assert project.profiles_config == {"send_anonymous_usage_stats": False}


def test_a_project_in_a_log_or_traceback_shows_no_profile_value(tmp_path):
    project = load_project(_project(tmp_path))
    assert PASSWORD not in repr(project) and PASSWORD not in str(project)
