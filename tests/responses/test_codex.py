"""Codex itself (npm @openai/codex, `codex exec`) through the gateway: a turn with a shell call.

Codex speaks only the Responses API. Its provider entry points at the gateway with
wire_api = "responses"; the fake upstream first calls the shell tool Codex offers, Codex
runs the command and sends its output back, and the fake then answers in text.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.fakes.upstream import count_prompt_tokens
from tests.support.npm import node_client_fixture

pytestmark = pytest.mark.slow

codex_client = node_client_fixture("codex")

CONFIG = """\
model = "deepseek-chat"
model_provider = "silk"
approval_policy = "never"
sandbox_mode = "danger-full-access"
# The gateway runs function tools only; Codex's own web search is a built-in tool.
web_search = "disabled"

[model_providers.silk]
name = "SilkGateway"
base_url = "{base_url}"
env_key = "SILK_API_KEY"
wire_api = "responses"
"""


def _codex(folder, gateway, key, home, workdir, prompt: str) -> subprocess.CompletedProcess:
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(CONFIG.format(base_url=gateway.url + "/v1"))
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "CODEX_HOME": str(home),
           "SILK_API_KEY": key, "NO_COLOR": "1"}
    return subprocess.run([str(folder / "node_modules" / ".bin" / "codex"), "exec",
                           "--skip-git-repo-check", "--json", prompt],
                          cwd=workdir, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=120,
                          check=False)


def test_codex_runs_a_shell_call_and_answers(codex_client, gateway, accounts, upstream,
                                             tmp_path):
    acct = accounts.make(credit="1")
    workdir = tmp_path / "work"
    workdir.mkdir()
    args = json.dumps({"cmd": "echo codex-was-here"})
    prompt = f"Say hi from the shell [[fake: tool_call=exec_command tool_args='{args}']]"
    done = _codex(codex_client, gateway, acct.key, tmp_path / "codex-home", workdir, prompt)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    items = [e["item"] for e in events if e.get("type") == "item.completed"]
    commands = [i for i in items if i.get("type") == "command_execution"]
    assert commands and "codex-was-here" in commands[0]["aggregated_output"]
    assert items[-1]["type"] == "agent_message"
    assert items[-1]["text"] == "Hello from the fake upstream ."
    assert any(e.get("type") == "turn.completed" for e in events)

    chats = [r for r in upstream.requests if r.provider == "deepseek"]
    assert len(chats) == 2
    first, second = (r.body for r in chats)
    assert "exec_command" in [t["function"]["name"] for t in first["tools"]]
    [call] = second["messages"][-2]["tool_calls"]
    assert call["function"]["name"] == "exec_command"
    tool_output = second["messages"][-1]
    assert tool_output["role"] == "tool" and tool_output["tool_call_id"] == call["id"]
    assert "codex-was-here" in tool_output["content"]
    # Each of the two requests is charged once, exactly what the fake counted.
    records = accounts.usage_records(acct.id)
    assert len(records) == 2 and {r.surface for r in records} == {"responses"}
    assert [r.prompt_tokens for r in records] == [count_prompt_tokens(first["messages"]),
                                                  count_prompt_tokens(second["messages"])]
    assert accounts.audit() == []
