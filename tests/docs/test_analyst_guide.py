"""Every code block of docs/analyst-guide.md runs against a demo run."""

import os
import re
import shlex
import subprocess
import sys

from tests.conftest import ROOT

GUIDE = ROOT / "docs" / "analyst-guide.md"
BLOCK = re.compile(r"```(python|bash)\n(.*?)```", re.S)


def _blocks(kind):
    return [code for lang, code in BLOCK.findall(GUIDE.read_text(encoding="utf-8")) if lang == kind]


def test_guide_has_examples_for_every_tool():
    text = GUIDE.read_text(encoding="utf-8")
    for needle in ("carelake sql", "get_spark", "duckdb", "polars", "versionAsOf", "version=version"):
        assert needle in text


def test_python_blocks_run(demo_run, monkeypatch, capsys):
    workdir, _ = demo_run
    monkeypatch.setenv("CARELAKE_HOME", str(workdir))
    blocks = _blocks("python")
    assert len(blocks) >= 4
    for code in blocks:
        exec(compile(code, str(GUIDE), "exec"), {"__name__": "analyst_guide"})
    assert "region" in capsys.readouterr().out


def test_shell_blocks_run(demo_run):
    workdir, _ = demo_run
    env = {**os.environ, "CARELAKE_HOME": str(workdir)}
    blocks = _blocks("bash")
    assert blocks
    for code in blocks:
        args = shlex.split(code.strip())
        assert args[0] == "carelake"
        out = subprocess.run([sys.executable, "-m", "carelake.cli", *args[1:]], capture_output=True, text=True, env=env, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip()
