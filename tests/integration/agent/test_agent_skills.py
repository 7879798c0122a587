"""The build's skills and instructions in a real checkout (issue 54): the runner writes them where coding agents read
them, the prompt lists them, the agent's commands see them and git does not, and the pushed branch has the agent's
work only (a tracked AGENTS.md keeps the agent's own edit, without the build's block)."""

from __future__ import annotations

from pathlib import Path

import agent_servers as servers
import pytest
from agent_servers import task_input

from longshot.agent import skills

pytestmark = pytest.mark.integration

SKILL_MD = "---\nname: style\ndescription: House style for this app.\n---\n# Style\nShort functions.\n"
RULES = "# App rules\nRun make test.\n"


def mounts(root: Path) -> dict[str, str]:
    """Skill and instructions folders laid out as the kubelet mounts ConfigMaps (``..data`` and key symlinks)."""
    for folder, files in (("skills/style", {"SKILL.md": SKILL_MD, "example.py": "def f():\n    return 1\n"}),
                          ("instructions", {"AGENTS.md": "Write tests first.\n"})):
        stamped = root / folder / "..2026_11_28_08_00_00.1"
        stamped.mkdir(parents=True)
        for name, text in files.items():
            (stamped / name).write_text(text)
            (root / folder / name).symlink_to(f"..data/{name}")
        (root / folder / "..data").symlink_to(stamped.name)
    return {"LONGSHOT_SKILLS_DIR": str(root / "skills"), "LONGSHOT_INSTRUCTIONS_DIR": str(root / "instructions")}


def test_skills_and_instructions_are_in_the_checkout_and_the_prompt_but_not_in_the_pushed_branch(
        daemon, run_agent, tmp_path):
    daemon.repos.create("skills", {"README.md": "# app\n", "AGENTS.md": RULES})
    script = {"steps": [
        {"run": {"command": "cat .agents/skills/style/SKILL.md .claude/skills/style/example.py > seen.txt && "
                            "grep -q 'Write tests first' AGENTS.md && "
                            "git status --porcelain --untracked-files=all > status.txt", "check": True}},
        {"edit": {"path": "AGENTS.md", "old": "Run make test.\n", "new": "Run make test.\nKeep functions short.\n"}},
        {"finish": {"summary": "Read the skill"}},
    ]}
    result = run_agent(task_input(daemon.url("skills"), skills=[{"name": "style"}], agents_md=True), script=script,
                       env=mounts(tmp_path / "mounts"))

    assert result.exit_code == 0, result.stdout
    h = result.handoff
    assert h.outcome == "succeeded" and h.files_changed == ["AGENTS.md", "seen.txt", "status.txt"]
    system = next(e["content"] for e in result.events("message") if e["role"] == "system")
    assert "- style (.agents/skills/style/SKILL.md): House style for this app." in system
    assert "AGENTS.md at the root of the checkout" in system
    clone = tmp_path / "check"
    servers.git("clone", "-q", "-b", h.branch or "", daemon.url("skills"), str(clone))
    # the agent's commands saw both copies of the skill and the instructions...
    assert (clone / "seen.txt").read_text() == SKILL_MD + "def f():\n    return 1\n"
    # ...and git did not see the skill folders (excluded); the tracked AGENTS.md is modified, as the agent sees it
    status = (clone / "status.txt").read_text()
    assert " M AGENTS.md" in status and ".agents" not in status and ".claude" not in status
    # the branch has the agent's work only: no skill folders, AGENTS.md with the agent's line and not the block
    assert not (clone / ".agents").exists() and not (clone / ".claude").exists()
    assert (clone / "AGENTS.md").read_text() == RULES + "Keep functions short.\n"
    tree = servers.git("ls-tree", "-r", "--name-only", "HEAD", cwd=clone).split()
    assert sorted(tree) == ["AGENTS.md", "README.md", "seen.txt", "status.txt"]


def test_instructions_alone_make_no_commit_and_a_missing_skill_md_fails_as_configuration(daemon, run_agent,
                                                                                         tmp_path):
    daemon.repos.create("quiet", {"README.md": "# app\n", "AGENTS.md": RULES})
    env = mounts(tmp_path / "mounts")
    result = run_agent(task_input(daemon.url("quiet"), agents_md=True), env=env,
                       script={"steps": [{"read": {"path": "AGENTS.md"}, "check": True}, {"finish": "nothing"}]})
    assert result.exit_code == 0, result.stdout
    assert result.handoff.outcome == "empty" and result.handoff.commit is None
    assert skills.BEGIN in result.tool_calls("read_file")[0]["result"]

    (tmp_path / "mounts/skills/bare").mkdir()
    (tmp_path / "mounts/skills/bare/notes.md").write_text("no SKILL.md here\n")
    result = run_agent(task_input(daemon.url("quiet"), skills=[{"name": "bare"}]), env=env,
                       script={"steps": [{"finish": "never runs"}]})
    assert result.handoff.outcome == "failed" and result.handoff.failure is not None
    assert result.handoff.failure.failure_class == "Configuration"
    assert "spec.agent.skills (bare): the ConfigMap has no key SKILL.md" in result.handoff.failure.message
