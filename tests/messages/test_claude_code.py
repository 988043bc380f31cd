"""Claude Code itself (npm @anthropic-ai/claude-code) completes a turn that uses a tool.

`claude -p` runs against the gateway under gunicorn with `claude-*` names aliased to a
catalogue model; the fake upstream answers the first request with a call of Claude Code's
Read tool, and with text once the tool's result comes back. Both ways upstream: translated
to chat completions, and native (the fake speaking Anthropic Messages).
"""

import json
import os
import subprocess

import pytest

from tests.support.npm import install

pytestmark = pytest.mark.slow

SECRET = "silk-claude-code-read-this"
REPLY = "The file says hello ."


@pytest.fixture(scope="module")
def claude_code():
    return install("claude-code") / "node_modules" / ".bin" / "claude"


@pytest.fixture
def aliased(gateway_env):
    gateway_env["SILK_MODEL_ALIASES"] = "claude-*=deepseek-chat"


def _run(claude_code, gateway, key, workdir, home):
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "ANTHROPIC_BASE_URL": gateway.url,
           "ANTHROPIC_AUTH_TOKEN": key, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
           "DISABLE_AUTOUPDATER": "1", "CI": "1"}
    done = subprocess.run([str(claude_code), "-p", "What does notes.txt say?",
                           "--output-format", "json"], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _turn(claude_code, gateway, accounts, upstream, tmp_path, sent_result):
    acct = accounts.make(credit="5")
    workdir, home = tmp_path / "project", tmp_path / "home"
    workdir.mkdir()
    home.mkdir()
    (workdir / "notes.txt").write_text(SECRET + "\n")
    upstream.behave(tool_call="Read", reply=REPLY,
                    tool_args=json.dumps({"file_path": str(workdir / "notes.txt")}))
    result = _run(claude_code, gateway, acct.key, workdir, home)
    assert REPLY.rstrip(" .") in result["result"], result
    answered = [r for r in upstream.requests if r.status == 200]
    assert any(SECRET in sent_result(r.body) for r in answered), "the tool never ran"
    records = accounts.usage_records(acct.id)
    assert len(records) == len(answered) >= 2
    assert all(r.surface == "messages" and r.model == "deepseek-chat" for r in records)
    assert all(r.status == "ok" and r.cost_units > 0 or r.free_tokens for r in records)
    assert accounts.audit() == []
    assert accounts.row(acct.id).reserved_units == 0


def _chat_tool_result(body) -> str:
    return " ".join(str(m.get("content")) for m in body.get("messages", [])
                    if m.get("role") == "tool")


def _anthropic_tool_result(body) -> str:
    return json.dumps([b for m in body.get("messages", []) if isinstance(m["content"], list)
                       for b in m["content"] if b.get("type") == "tool_result"])


def test_claude_code_translated(aliased, claude_code, gateway, accounts, upstream, tmp_path):
    _turn(claude_code, gateway, accounts, upstream, tmp_path, _chat_tool_result)
    assert all(r.path.endswith("/chat/completions") for r in upstream.requests)


def test_claude_code_native(aliased, native_gateway, claude_code, gateway, accounts, upstream,
                            tmp_path):
    _turn(claude_code, gateway, accounts, upstream, tmp_path, _anthropic_tool_result)
    assert all(r.path.endswith("/anthropic/v1/messages") for r in upstream.requests)
