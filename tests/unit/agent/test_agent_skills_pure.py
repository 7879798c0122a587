"""The build's skills and instructions in the checkout (longshot.agent.skills): the pure decisions, and the copy
from mounts laid out as the kubelet lays out a ConfigMap volume (``..data`` symlinks), on a temporary folder."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from longshot.agent import errors, events, redact, skills
from longshot.api import handoff

pytestmark = pytest.mark.unit

SKILL_MD = b"---\nname: style\ndescription: House style for Python modules.\n---\n# Style\nUse four spaces.\n"


def task(**fields: object) -> handoff.TaskInput:
    return handoff.TaskInput.model_validate({"task": "b-t", "build": "b", "namespace": "n", "role": "worker",
                                             "description": "d", "repository_url": "https://x/y.git",
                                             "branch": "longshot/n/b/b-t", **fields})


def configmap_volume(root: Path, files: dict[str, bytes]) -> Path:
    """A folder as the kubelet mounts a ConfigMap: the files in a timestamped folder, ``..data`` pointing at it,
    and one symlink per key."""
    root.mkdir(parents=True)
    stamped = root / "..2026_11_28_08_00_00.1"
    stamped.mkdir()
    for name, data in files.items():
        (stamped / name).write_bytes(data)
    (root / "..data").symlink_to(stamped.name)
    for name in files:
        (root / name).symlink_to(f"..data/{name}")
    return root


def ev() -> events.Events:
    return events.Events(redact.Redactor(), stream=io.StringIO())


# --- pure -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    (SKILL_MD, "House style for Python modules."),
    (b"---\ndescription: 'Quoted: with a colon'\n---\nbody", "Quoted: with a colon"),
    (b"---\ndescription: >\n  Folded over\n  two lines.\nname: x\n---\n", "Folded over two lines."),
    (b"---\nname: x\n---\ndescription: not front matter\n", None),
    (b"# no front matter\ndescription: no\n", None),
    (b"---\ndescription: never closed\n", None),
    (b"---\n  description: indented is not top level\n---\n", None),
    (b"---\ndescription: a\x1b[31mred\x07 bell\n---\n", "a [31mred bell"),
], ids=["plain", "quoted", "folded", "after", "none", "unclosed", "indented", "control"])
def test_the_description_comes_from_the_front_matter_only(text: bytes, expected: str | None) -> None:
    assert skills.description_of(text) == expected


def test_a_long_description_is_cut() -> None:
    got = skills.description_of(b"---\ndescription: " + b"word " * 1000 + b"\n---\n")
    assert got is not None and len(got) == skills.MAX_DESCRIPTION_CHARS and got.endswith("...")


def test_a_skill_goes_to_both_default_folders_or_its_own_path() -> None:
    assert skills.folders_of(handoff.SkillInput(name="style")) == (".agents/skills/style", ".claude/skills/style")
    assert skills.folders_of(handoff.SkillInput(name="style", path=".github/skills/style")) == (
        ".github/skills/style",)


@pytest.mark.parametrize("path", ["..", "a/../b", ".git/hooks", "x/.GIT", "./a", "/".join("a" * 9)])
def test_a_path_out_of_the_checkout_or_into_git_is_refused(path: str) -> None:
    with pytest.raises(errors.ConfigError, match="not a folder inside the checkout"):
        skills.folders_of(handoff.SkillInput.model_construct(name="x", path=path))


@pytest.mark.parametrize(("key", "ok"), [("SKILL.md", True), (".hidden", True), ("..data", False), ("..", False),
                                         (".", False), ("a/b", False), ("", False), ("x" * 254, False)])
def test_a_configmap_key_is_a_file_name(key: str, ok: bool) -> None:
    assert skills.valid_key(key) is ok


@pytest.mark.parametrize("existing", [None, "", "# Repo rules\n\nRun make test.\n", "no newline at the end"])
def test_instructions_added_then_taken_out_give_the_repository_file_back(existing: str | None) -> None:
    text = "Write tests first.\n"
    shown = skills.with_instructions(existing, text)
    assert skills.BEGIN in shown and "Write tests first." in shown
    if existing:
        assert shown.startswith(existing.rstrip("\n"))
    back = skills.without_instructions(shown, existing, text)
    assert back == (existing if existing is not None else None)


def test_the_agents_own_edit_of_agents_md_is_kept_without_the_block() -> None:
    existing, text = "# Repo rules\n", "Build rules.\n"
    edited = skills.with_instructions(existing, text) + "\nA line the agent added.\n"
    assert skills.without_instructions(edited, existing, text) == "# Repo rules\nA line the agent added.\n"
    # the agent edited inside the block: cut from marker to marker
    inside = skills.with_instructions(existing, text).replace("Build rules.", "Build rules, changed.")
    assert skills.without_instructions(inside, existing, text) == "# Repo rules\n"
    # markers gone: the agent rewrote the file, kept as it is
    assert skills.without_instructions("rewritten\n", existing, text) == "rewritten\n"
    # a file the runner made, to which the agent added a line: the line is committed
    made = skills.with_instructions(None, text) + "agent\n"
    assert skills.without_instructions(made, None, text) == "agent\n"


def test_exclude_lines_are_anchored_folders_and_a_created_agents_md() -> None:
    assert skills.exclude_lines([".agents/skills/a", "x/y"], True) == ["/.agents/skills/a/", "/x/y/", "/AGENTS.md"]
    assert skills.exclude_lines([], False) == []


# --- reading mounts and writing the checkout --------------------------------------------------------------

def checkout(tmp_path: Path, files: dict[str, str] | None = None) -> Path:
    root = tmp_path / "repo"
    (root / ".git" / "info").mkdir(parents=True)
    for name, text in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_install_writes_both_folders_excludes_them_and_withdraw_takes_everything_out(tmp_path: Path) -> None:
    mounts = tmp_path / "skills"
    configmap_volume(mounts / "style", {"SKILL.md": SKILL_MD, "example.py": b"x = 1\n"})
    configmap_volume(tmp_path / "instructions", {"AGENTS.md": b"Write tests first.\n"})
    repo = checkout(tmp_path, {"AGENTS.md": "# Repo\n", "app.py": "pass\n"})
    done = skills.install(task(skills=[{"name": "style"}], agents_md=True), repo, skills_dir=mounts,
                          instructions_dir=tmp_path / "instructions", ev=ev())

    for folder in (".agents/skills/style", ".claude/skills/style"):
        assert (repo / folder / "SKILL.md").read_bytes() == SKILL_MD
        assert (repo / folder / "example.py").read_text() == "x = 1\n"
        assert not (repo / folder / "..data").exists()
    assert (repo / "AGENTS.md").read_text().startswith("# Repo\n\n" + skills.BEGIN)
    exclude = (repo / ".git/info/exclude").read_text()
    assert "/.agents/skills/style/\n/.claude/skills/style/\n" in exclude and "/AGENTS.md" not in exclude
    assert done.prompt() == {"agents_md": True, "skills": [
        {"name": "style", "description": "House style for Python modules.", "folder": ".agents/skills/style"}]}

    done.withdraw()
    assert sorted(p.name for p in repo.iterdir()) == [".git", "AGENTS.md", "app.py"]
    assert (repo / "AGENTS.md").read_text() == "# Repo\n"
    done.withdraw()  # twice is harmless


def test_an_agents_md_the_runner_made_is_excluded_and_removed(tmp_path: Path) -> None:
    configmap_volume(tmp_path / "instructions", {"AGENTS.md": b"Rules.\n"})
    repo = checkout(tmp_path)
    done = skills.install(task(agents_md=True), repo, skills_dir=tmp_path / "none",
                          instructions_dir=tmp_path / "instructions", ev=ev())
    assert "/AGENTS.md\n" in (repo / ".git/info/exclude").read_text()
    done.withdraw()
    assert not (repo / "AGENTS.md").exists()


def test_the_repositorys_own_folder_and_a_symlink_on_the_way_are_left_alone(tmp_path: Path) -> None:
    configmap_volume(tmp_path / "skills" / "style", {"SKILL.md": SKILL_MD})
    outside = tmp_path / "outside"
    outside.mkdir()
    repo = checkout(tmp_path, {".agents/skills/style/SKILL.md": "the repository's\n"})
    (repo / ".claude").symlink_to(outside)
    done = skills.install(task(skills=[{"name": "style"}]), repo, skills_dir=tmp_path / "skills",
                          instructions_dir=tmp_path / "none", ev=ev())
    assert (repo / ".agents/skills/style/SKILL.md").read_text() == "the repository's\n"
    assert list(outside.iterdir()) == []
    assert done.folders == [] and done.prompt()["skills"] == []  # the prompt does not claim the repository's
    done.withdraw()
    assert (repo / ".agents/skills/style/SKILL.md").read_text() == "the repository's\n"


@pytest.mark.parametrize(("files", "words"), [
    ({"README.md": b"no skill file"}, "has no key SKILL.md"),
    ({"SKILL.md": b"x" * (skills.MAX_FILE_BYTES + 1)}, "file SKILL.md is larger than 256 KiB"),
    ({"SKILL.md": b"x", **{f"f{i}": b"x" for i in range(skills.MAX_FILES)}}, "more than 64"),
    ({"SKILL.md": b"x", **{f"f{i}": b"x" * skills.MAX_FILE_BYTES for i in range(4)}}, "larger than 1024 KiB"),
], ids=["no-skill-md", "big-file", "many-files", "big-skill"])
def test_a_skill_over_a_bound_or_without_skill_md_fails_the_attempt_naming_it(tmp_path: Path, files, words) -> None:
    configmap_volume(tmp_path / "skills" / "style", files)
    with pytest.raises(errors.ConfigError, match=rf"spec\.agent\.skills \(style\): .*{words}"):
        skills.install(task(skills=[{"name": "style"}]), checkout(tmp_path), skills_dir=tmp_path / "skills",
                       instructions_dir=tmp_path / "none", ev=ev())


def test_a_mounted_file_that_resolves_outside_its_mount_is_refused(tmp_path: Path) -> None:
    mount = tmp_path / "skills" / "style"
    mount.mkdir(parents=True)
    (tmp_path / "secret").write_text("not the skill's")
    (mount / "SKILL.md").symlink_to(tmp_path / "secret")
    with pytest.raises(errors.ConfigError, match="resolves outside its mount"):
        skills.read_skill(handoff.SkillInput(name="style"), mount)


def test_a_skill_that_is_not_mounted_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="not mounted"):
        skills.read_skill(handoff.SkillInput(name="style"), tmp_path / "missing")


def test_nothing_to_install_touches_nothing(tmp_path: Path) -> None:
    repo = checkout(tmp_path)
    done = skills.install(task(), repo, skills_dir=tmp_path / "x", instructions_dir=tmp_path / "y", ev=ev())
    assert done.prompt() == {"skills": [], "agents_md": False}
    assert os.listdir(repo / ".git/info") == []


def test_a_repository_agents_md_that_is_a_symlink_or_huge_gets_no_instructions_and_fails_nothing(
        tmp_path: Path) -> None:
    configmap_volume(tmp_path / "instructions", {"AGENTS.md": b"Rules.\n"})
    repo = checkout(tmp_path, {"big.md": "x" * (skills.MAX_AGENTS_MD_BYTES + 1)})
    (repo / "AGENTS.md").symlink_to("big.md")
    done = skills.install(task(agents_md=True), repo, skills_dir=tmp_path / "none",
                          instructions_dir=tmp_path / "instructions", ev=ev())
    assert done.prompt()["agents_md"] is False and (repo / "AGENTS.md").is_symlink()
    (repo / "AGENTS.md").unlink()
    (repo / "big.md").rename(repo / "AGENTS.md")
    done = skills.install(task(agents_md=True), repo, skills_dir=tmp_path / "none",
                          instructions_dir=tmp_path / "instructions", ev=ev())
    assert done.prompt()["agents_md"] is False
    assert (repo / "AGENTS.md").stat().st_size == skills.MAX_AGENTS_MD_BYTES + 1


def test_a_skill_with_a_path_goes_there_only_and_the_prompt_names_the_folder_written(tmp_path: Path) -> None:
    configmap_volume(tmp_path / "skills" / "style", {"SKILL.md": SKILL_MD})
    configmap_volume(tmp_path / "skills" / "release", {"SKILL.md": b"# Release\n"})
    repo = checkout(tmp_path, {".agents/skills/style/SKILL.md": "the repository's\n"})
    done = skills.install(task(skills=[{"name": "style"}, {"name": "release", "path": ".github/skills/rel"}]), repo,
                          skills_dir=tmp_path / "skills", instructions_dir=tmp_path / "none", ev=ev())
    assert done.prompt()["skills"] == [
        {"name": "style", "description": "House style for Python modules.", "folder": ".claude/skills/style"},
        {"name": "release", "description": None, "folder": ".github/skills/rel"}]
    assert not (repo / ".agents/skills/release").exists() and (repo / ".github/skills/rel/SKILL.md").exists()
    assert (repo / ".git/info/exclude").read_text().endswith("/.claude/skills/style/\n/.github/skills/rel/\n")
    done.withdraw()
    assert not (repo / ".github").exists() and not (repo / ".claude").exists()
    assert (repo / ".agents/skills/style/SKILL.md").read_text() == "the repository's\n"
