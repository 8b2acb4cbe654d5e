"""Every `streampose` command the README and docs/commands.md show is one the CLI accepts."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "docs" / "commands.md"]


def shown_commands() -> list[tuple[str, str]]:
    """(page, command) for each `streampose SUBCOMMAND ...` in a bash block, continuation lines joined."""
    out = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
            for command in block.replace("\\\n", " ").splitlines():
                command = command.split("  #")[0].strip()
                if command.startswith("streampose "):
                    out.append((page.name, command))
    return out


@functools.cache
def help_text(subcommand: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "streampose", subcommand, "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"streampose {subcommand} --help failed: {done.stderr}"
    return done.stdout


def test_the_pages_show_commands():
    shown = {c.split()[1] for _, c in shown_commands()}
    assert {"label", "train", "eval", "predict", "export", "view", "models", "experiment"} <= shown


@pytest.mark.parametrize("page, command", shown_commands())
def test_every_flag_shown_exists(page, command):
    words = command.split()
    subcommand = words[1]
    helptext = help_text(subcommand)
    flags = {w.strip("[]|(),").split("=")[0] for w in words if w.lstrip("[(").startswith("--")}
    missing = sorted(f for f in flags if f and f not in helptext)
    assert not missing, f"{page}: `{command}` shows {missing}, which `streampose {subcommand} --help` does not list"
